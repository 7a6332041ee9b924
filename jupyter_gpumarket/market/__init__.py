"""The market path's I/O: the offer index (Registry events, cached per network profile), live
probes of the offers' agents, and choosing an offer for a kernel (ranking itself is pure, in
:mod:`jupyter_gpumarket.core.ranking`)."""
