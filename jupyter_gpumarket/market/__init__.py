"""The market path's I/O: the offer index (Registry events, cached per network profile), live
probes of offers' agents, choosing offers for a kernel (index + probes + ranking), and the
renter's side of the seeded verification challenge (the pure logic lives in core/:
market_offer, ranking, challenge*, vram_proof, verification)."""
