"""One kind's proofs at rest, as the job runner handles them: sidecar, archive, proof row.

- :meth:`ProofFiles.place_sidecar` writes a proof as the file's sidecar; whatever was there
  before (an earlier version's proof, or something an operator put there) goes to the archive
  first, so nothing is silently overwritten (DESIGN rule 6). Never through a symlink (rule 4:
  store/files/sidecar.py).
- :func:`reusable` finds, among the archived proofs over the same digest, one that still
  verifies and needs no renewal yet: a copy or a revert is not stamped again.
- :func:`proof_row` is the index row of a verified proof.

Blocking (files, signature checks): the runner calls these off the loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from stampd.daemon.evidence.strategy import Obtained
from stampd.daemon.service.logs import get_logger
from stampd.store.errors import StampdError
from stampd.store.files.archive import archive_get, archive_put
from stampd.store.files.atomic import DirectorySyncs
from stampd.store.files.sidecar import Layout, read_sidecar, write_sidecar
from stampd.store.index.jobs import KnownProof, NewProof
from stampd.store.index.times import format_time
from stampd.store.kinds import KindSpec
from stampd.store.verify import Commitment, DigestOf, Verdict, Verifier

log = get_logger("stampd.runner")


class ProofFiles:
    """The sidecars and archive copies of one kind's proofs under one state directory."""

    def __init__(self, kind: KindSpec, state_dir: Path) -> None:
        self.kind = kind
        self.state_dir = state_dir
        #: The archive's extension: the kind's sidecar's, else its name (index-only kinds).
        self.extension = kind.sidecar or kind.name

    def archive(self, data: bytes, syncs: DirectorySyncs | None = None) -> None:
        """Keep ``data`` in the content-addressed archive (fsynced; its directory by ``syncs``
        when given)."""
        archive_put(self.state_dir, data, self.extension, syncs=syncs)

    def archived(self, sha256: str) -> bytes | None:
        """The archived proof with this SHA-256; None if it was never archived."""
        return archive_get(self.state_dir, sha256, self.extension)

    def read_sidecar(self, path: Path, layout: Layout) -> bytes | None:
        """The bytes of ``path``'s sidecar of this kind, or None when there is none."""
        return read_sidecar(path, self.kind.name, layout=layout, state_dir=self.state_dir)

    def place_sidecar(
        self, path: Path, layout: Layout, data: bytes, syncs: DirectorySyncs | None = None
    ) -> None:
        """Write ``data`` as ``path``'s sidecar; whatever was there before goes to the archive.

        With ``syncs``, the sidecar's directory is fsynced by the caller's ``syncs.sync()``;
        the previous sidecar's archive copy never waits (it must be durable before the
        sidecar it keeps is replaced: DESIGN rule 6).
        """
        existing = self.read_sidecar(path, layout)
        if existing == data:
            return
        if existing is not None:
            archived = archive_put(self.state_dir, existing, self.extension)
            log.info("sidecar_archived", path=str(path), archive=str(archived.path))
        write_sidecar(
            path,
            self.kind.name,
            data,
            layout=layout,
            state_dir=self.state_dir,
            replace=existing is not None,
            syncs=syncs,
        )


def usable(verdict: Verdict, algorithm: str) -> bool:
    """Valid (or pending its anchor), made by a configured provider, over the digest the job
    wants: what may be recorded as this version's proof."""
    return (
        verdict.status in ("valid", "pending")
        and verdict.provider is not None
        and verdict.algorithm == algorithm
    )


def reusable(
    files: ProofFiles,
    candidates: Sequence[KnownProof],
    verifier: Verifier,
    algorithm: str,
    versions: DigestOf,
) -> Obtained | None:
    """The first archived proof among ``candidates`` that verifies again for this content."""
    for known in candidates:
        try:
            data = files.archived(known.sidecar_sha256)
        except StampdError as error:
            log.warning("archived_proof_unusable", proof_id=known.proof_id, reason=str(error))
            continue
        if data is None:
            log.warning(
                "archived_proof_missing",
                proof_id=known.proof_id,
                sha256=known.sidecar_sha256,
                hint="restore STATE/archive from a backup; a new proof is requested",
            )
            continue
        verdict = verifier.verify(data, source="archive", digest_of=versions, prefer=known.provider)
        # A proof whose chain has expired since still proves its time, but a new version
        # deserves evidence that needs no renewal yet.
        if usable(verdict, algorithm) and not verdict.renewal_overdue:
            # Its pairs as its bytes say: the new row waits (or waited) where the old one did.
            return Obtained(data, verdict, (), verdict.commitments)
    return None


def proof_row(
    kind: str,
    data: bytes,
    verdict: Verdict,
    digest: bytes,
    *,
    commitments: Sequence[Commitment] = (),
) -> NewProof:
    """The index row of a valid (or pending) proof of ``kind`` over ``digest`` (under the
    verdict's algorithm), made by the provider the verdict names, waiting at ``commitments``."""
    return NewProof(
        kind=kind,
        provider=verdict.provider or "",
        digest_alg=verdict.algorithm or "",
        digest=digest.hex(),
        gen_time=None if verdict.gen_time is None else format_time(verdict.gen_time),
        serial=None if verdict.detail is None else verdict.detail.serial,
        authority=verdict.authority,
        not_after=None if verdict.chain_not_after is None else format_time(verdict.chain_not_after),
        sidecar_sha256=hashlib.sha256(data).hexdigest(),
        status="pending" if verdict.status == "pending" else "complete",
        commitments=tuple(commitments),
    )
