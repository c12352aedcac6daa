"""Files on disk: digests, atomic writes, sidecar naming, the archive, path display."""
