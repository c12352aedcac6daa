"""Network clients that produce proofs, one module per protocol (DESIGN §2, §6)."""
