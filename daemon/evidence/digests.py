"""The digest a job's proof covers, and the digests a verifier may ask of a version.

The index keeps SHA-256 and SHA-512 of every version (DESIGN §1). A kind configured for
another algorithm (``timestamp.digest = "sha384"``) needs the file read again, which is only
possible while it still holds this version: the read goes through the hasher's guarded
:func:`~stampd.daemon.watch.hasher.rehash`, and a SHA-256 taken in the same pass proves the
content is still the recorded one. When it is not, the job can never be done
(:class:`ContentGone`).
"""

from __future__ import annotations

from stampd.daemon.watch.hasher import rehash
from stampd.store.errors import ErrorClass, StampdError
from stampd.store.index.jobs import DueJob
from stampd.store.verify import DigestOf


class ContentGone(StampdError):
    """The version's content is no longer on disk, so a digest it lacks cannot be computed."""

    error_class = ErrorClass.CONTENT_GONE


def recorded(job: DueJob) -> dict[str, bytes]:
    """The digests the index holds for the job's version."""
    return {"sha256": bytes.fromhex(job.sha256), "sha512": bytes.fromhex(job.sha512)}


def job_digest(job: DueJob, algorithm: str, *, setting: str) -> bytes:
    """The version's digest under ``algorithm``, reading the file only when the index lacks it.

    ``setting`` is the configuration key that chose ``algorithm``, for the hint of
    :class:`ContentGone`. Blocking (a file read): call it off the loop.
    """
    known = recorded(job)
    if algorithm in known:
        return known[algorithm]
    gone = ContentGone(
        f"{job.path}: version {job.version_id} is no longer on disk, so its {algorithm} digest"
        " cannot be computed",
        hint=f"set {setting} to sha256 or sha512 to stamp superseded versions too",
    )
    if not job.current or job.file_state != "present":
        raise gone
    digests = rehash(job.path, (algorithm, "sha256"))
    if digests["sha256"].hex() != job.sha256:
        raise gone
    return digests[algorithm]


def digests_of(known: dict[str, bytes]) -> DigestOf:
    """A :data:`~stampd.store.verify.DigestOf` over digests at hand; ValueError for others."""

    def of(name: str) -> bytes:
        if name not in known:
            raise ValueError(name)  # SHA-384 would need the file read again
        return known[name]

    return of
