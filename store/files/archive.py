"""The content-addressed archive of every proof ever obtained: ``STATE/archive/ab/<sha256>.<ext>``.

Proofs are history (DESIGN rule 6): when a file changes, an ``.ots`` is upgraded or an
``.ers`` renewed, the sidecar moves on but its earlier bytes stay here, under the SHA-256 of
those bytes. A job is done only once its archive copy is durable too (rule 1). The ``ab/``
fan-out (first two hex digits) keeps directories small with millions of proofs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from stampd.store.errors import FileAccessError
from stampd.store.files.atomic import (
    DirectorySyncs,
    directory,
    read_file,
    read_path,
    write_atomic,
)
from stampd.store.files.sidecar import MAX_SIDECAR_BYTES

# 0444: an archived proof never changes (its name is its hash), so nothing should open it
# for writing. Repairing a corrupted copy still works: rename() needs write access to the
# directory, not to the file it replaces.
ARCHIVE_MODE = 0o444
"""File mode of archived proofs."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_EXTENSION = re.compile(r"[a-z0-9]{1,16}")


@dataclass(frozen=True)
class ArchivedProof:
    """Where a proof was archived and the SHA-256 (lowercase hex) of its bytes."""

    path: Path
    sha256: str


def archive_path(state_dir: Path, sha256_hex: str, ext: str) -> Path:
    """``state_dir/archive/ab/<sha256_hex>.<ext>`` where ``ab`` is the first two hex digits.

    Raises ValueError unless ``sha256_hex`` is 64 lowercase hex digits and ``ext`` a short
    lowercase alphanumeric extension: both become path components, so neither may carry
    ``/`` or ``..``, and one digest must map to exactly one name.
    """
    if not _SHA256_HEX.fullmatch(sha256_hex):
        raise ValueError(f"not a lowercase hex SHA-256 digest: {sha256_hex!r}")
    if not _EXTENSION.fullmatch(ext):
        raise ValueError(f"not a proof file extension: {ext!r}")
    return state_dir / "archive" / sha256_hex[:2] / f"{sha256_hex}.{ext}"


def archive_put(
    state_dir: Path, data: bytes, ext: str, *, syncs: DirectorySyncs | None = None
) -> ArchivedProof:
    """Store ``data`` in the archive (idempotent) and return where it is.

    An existing copy with the right bytes is left alone; anything else at that name (a
    truncated or bit-flipped copy) is replaced atomically with the right bytes. Directories
    are created without following symlinks (DESIGN rule 4) and everything is fsynced (the
    directory by the caller's ``syncs``, when given: :class:`~.atomic.DirectorySyncs`).
    """
    digest = hashlib.sha256(data).hexdigest()
    path = archive_path(state_dir, digest, ext)
    with directory(path.parent, create=True) as dir_fd:
        if not _holds(dir_fd, path.name, data):
            write_atomic(dir_fd, path.name, data, mode=ARCHIVE_MODE, replace=True, syncs=syncs)
        elif syncs is not None:
            # Written by a write whose directory sync may still be pending (a copy in the
            # same set): this caller's sync covers it too.
            syncs.add(dir_fd)
    return ArchivedProof(path=path, sha256=digest)


def archive_get(state_dir: Path, sha256_hex: str, ext: str) -> bytes | None:
    """The archived proof with this SHA-256, or None if it was never archived.

    The bytes are checked against their name; a mismatch raises
    :class:`~stampd.store.errors.FileAccessError` rather than handing out a wrong proof.
    """
    path = archive_path(state_dir, sha256_hex, ext)
    data = read_path(path, max_bytes=MAX_SIDECAR_BYTES)
    if data is None:
        return None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256_hex:
        raise FileAccessError(
            f"archived proof {path} is corrupted: its content hashes to {actual}",
            hint="restore it from a backup, or copy a sidecar with that SHA-256 over it",
        )
    return data


def _holds(dir_fd: int, name: str, data: bytes) -> bool:
    """Whether ``name`` holds exactly ``data``; unreadable, short or long all mean no."""
    try:
        # A longer file is wrong anyway, so read no more than the right length.
        return read_file(dir_fd, name, max_bytes=len(data)) == data
    except FileAccessError:
        return False
