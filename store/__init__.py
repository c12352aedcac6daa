"""stampd.store — what a proof *is*, at rest.

Pure and synchronous: digests, formats, offline verification, sidecar naming and
atomic file I/O, the SQLite index. No network, no asyncio, and never an import of
``stampd.daemon`` (DESIGN §2; tests/test_layering.py). Every call is synchronous to its
caller; the one internal thread is in ``digest.py``, which hashes SHA-512 on the second
core while the caller hashes SHA-256, because one core cannot meet DESIGN §11's target.
"""
