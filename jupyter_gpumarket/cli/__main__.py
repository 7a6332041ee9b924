import sys

from jupyter_gpumarket.cli import main

sys.exit(main())
