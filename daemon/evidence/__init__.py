"""Getting evidence: one job runner for every kind, a strategy per kind, providers and their pool.

Kind-neutral: ``runners`` (the service's one door: a runner per configured kind), ``runner``
(one kind's jobs, every action), ``strategy`` (what a kind brings), ``batcher`` (many jobs per
request), ``pool`` (failover and quorum over any role), ``roles`` (one Protocol per provider
role), ``entries`` (a kind's factories, found through its registry entry), ``proof_files``
(sidecar, archive, reuse, proof row), ``digests``, ``index_reader``, ``backoff``, ``locks``,
``repair`` (sidecar repair). The ``tsr`` kind: ``tsr`` (its strategy), ``tsa`` (one TSA over
HTTP), ``tsa_setup`` (TSAs from the configuration), ``tsr_anchors`` (roots for ``verify``).
"""
