"""The market path's I/O: live probes of offers' agents and the renter's side of the seeded
verification challenge (the pure logic lives in core/: market_offer, challenge*, vram_proof,
verification)."""
