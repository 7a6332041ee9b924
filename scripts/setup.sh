# Sourced by scripts/test.sh and scripts/demo.sh: a project venv with the package (editable,
# which also builds the labextension with npm) and the test extras.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
{ command -v bwrap && command -v nft; } >/dev/null || (apt-get update -qq && apt-get install -y -qq bubblewrap nftables) >/dev/null 2>&1 || true  # kernel sandbox
