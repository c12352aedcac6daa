"""Evidence formats, parsed and checked from bytes: RFC 3161 TSP (later OTS, CMS, ERS)."""
