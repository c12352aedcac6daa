"""Evidence formats, parsed and checked from bytes: RFC 3161 TSP and its CMS checks, the
OpenTimestamps codec (ots*), and the hash functions old proofs use (later CAdES, ERS)."""
