"""Getting evidence: the job runner, providers and their pool, sidecar repair."""
