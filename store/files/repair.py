"""Sidecars where backup tools look for them: put back what a rename or a hand left out.

A proof belongs to content, not to a name. After ``mv a.txt b.txt`` (live, or while the
daemon was down) the index row moves with the file and keeps its proofs, but ``a.txt.tsr``
stays behind: the sidecar must be re-created at ``b.txt.tsr`` from the archive, where every
proof is kept by the SHA-256 of its bytes (same content, so the same proof), and the one
left at the old name retired to the archive — never simply deleted (DESIGN rule 6). The same
repair puts back a sidecar deleted by hand, and replaces one whose bytes are not a proof of
the file's content (the previous one is archived first).

A user who moved ``a.txt.tsr`` along with ``a.txt`` keeps the moved sidecar: it holds the
proof already, or one that verifies for the content (then the caller adopts it as a proof).

Pure and synchronous like the rest of ``store``: the queries take a connection, the file
operations take paths, and the one judgement this module cannot make — does an unknown
sidecar prove this content? — is the caller's ``adopt`` callback.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stampd.store import kinds
from stampd.store.errors import StampdError
from stampd.store.files.archive import archive_get, archive_put
from stampd.store.files.atomic import remove_if_holds
from stampd.store.files.pathnames import escape, unescape_path
from stampd.store.files.sidecar import Layout, read_sidecar, sidecar_path, write_sidecar

# The sidecar bytes of the complete proofs of a file's current version, newest first: any of
# them may sit in the sidecar; the newest is the one written when none does.
_SQL_CURRENT_PROOFS = (
    "SELECT p.kind, p.sidecar_sha256 FROM files f JOIN proofs p"
    " ON p.version_id = f.current_version_id"
    " WHERE f.id = ? AND p.status = 'complete' AND p.sidecar_sha256 IS NOT NULL"
    " ORDER BY p.id DESC"
)
# Whether these bytes are a complete proof of a file that is present at another path: then a
# copy left at ``path`` is a leftover of a rename (proofs_sidecar index).
_SQL_HELD_ELSEWHERE = (
    "SELECT 1 FROM proofs p JOIN versions v ON v.id = p.version_id"
    " JOIN files f ON f.id = v.file_id AND f.current_version_id = v.id"
    " WHERE p.sidecar_sha256 = ? AND p.kind = ? AND p.status = 'complete'"
    " AND f.state = 'present' AND f.path <> ? LIMIT 1"
)


@dataclass(frozen=True)
class RepairTarget:
    """A present file whose sidecars are to be checked, with its current content's digests."""

    file_id: int
    path: Path
    version_id: int
    sha256: str
    sha512: str


_SQL_TARGET = (
    "SELECT f.path, v.id, v.sha256, v.sha512 FROM files f"
    " JOIN versions v ON v.id = f.current_version_id WHERE f.id = ? AND f.state = 'present'"
)


def repair_target(conn: sqlite3.Connection, file_id: int) -> RepairTarget | None:
    """The file as it is now (its current path and content), or None unless it is present
    with a version."""
    row = conn.execute(_SQL_TARGET, (file_id,)).fetchone()
    if row is None:
        return None
    return RepairTarget(file_id, unescape_path(row[0]), int(row[1]), str(row[2]), str(row[3]))


def current_proofs(conn: sqlite3.Connection, file_id: int) -> dict[str, tuple[str, ...]]:
    """Evidence kind → SHA-256 (hex) of each complete proof of the file's current version,
    newest first; kinds without a sidecar (``attest``) are left out."""
    with_sidecars = {spec.name for spec in kinds.with_sidecars()}
    found: dict[str, list[str]] = {}
    for kind, sha256 in conn.execute(_SQL_CURRENT_PROOFS, (file_id,)):
        if kind in with_sidecars:
            found.setdefault(str(kind), []).append(str(sha256))
    return {kind: tuple(hashes) for kind, hashes in found.items()}


def held_elsewhere(conn: sqlite3.Connection, *, sha256: str, kind: str, path: Path) -> bool:
    """Whether a proof with these bytes belongs to the current content of a present file that
    is not at ``path`` (so a sidecar holding them at ``path`` is a rename's leftover)."""
    row = conn.execute(_SQL_HELD_ELSEWHERE, (sha256, kind, escape(path))).fetchone()
    return row is not None


#: ``adopt(kind, data)``: whether ``data``, found in a sidecar, verifies for the file's
#: current content (the caller verifies it completely and records it as a proof).
Adopt = Callable[[str, bytes], bool]


@dataclass
class Repair:
    """What one :func:`repair_sidecars` call did (for logs, metrics and ``stampd rescan``)."""

    #: Kinds whose sidecar was written from the archive (missing or wrong before).
    written: list[str] = field(default_factory=list)
    #: Kinds whose sidecar held a proof stampd did not know that verifies: kept, and
    #: archived; the caller records it.
    adopted: list[str] = field(default_factory=list)
    #: Sidecars that were in the way (not a proof of this content): moved to the archive.
    archived: list[str] = field(default_factory=list)
    #: Kinds that could not be repaired, with why (an archive copy missing, a symlink …).
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.adopted)


def repair_sidecars(
    path: Path,
    proofs: Mapping[str, Sequence[str]],
    *,
    layout: Layout,
    state_dir: Path,
    adopt: Adopt,
) -> Repair:
    """Make each sidecar of ``path`` hold one of its current ``proofs`` (see
    :func:`current_proofs`): left as it is when it does, or when it holds another proof
    that ``adopt`` accepts; otherwise written from the archive, whatever was there archived
    first. Never writes through a symlink (the problem is reported instead)."""
    repair = Repair()
    for kind, hashes in proofs.items():
        if not hashes:
            continue
        try:
            _repair_one(
                path, kind, hashes, layout=layout, state_dir=state_dir, adopt=adopt, repair=repair
            )
        except StampdError as error:
            repair.problems.append((kind, str(error)))
    return repair


def _repair_one(
    path: Path,
    kind: str,
    hashes: Sequence[str],
    *,
    layout: Layout,
    state_dir: Path,
    adopt: Adopt,
    repair: Repair,
) -> None:
    existing = read_sidecar(path, kind, layout=layout, state_dir=state_dir)
    if existing is not None:
        if hashlib.sha256(existing).hexdigest() in hashes:
            return
        if adopt(kind, existing):
            archive_put(state_dir, existing, kinds.sidecar_extension(kind))
            repair.adopted.append(kind)
            return
    data = _archived(state_dir, kind, hashes)
    if data is None:
        repair.problems.append(
            (kind, f"no archived copy of its {kind} proof (restore STATE/archive from a backup)")
        )
        return
    if existing is not None:
        # Another file's proof, an older version's, or not a proof: history all the same.
        archive_put(state_dir, existing, kinds.sidecar_extension(kind))
        repair.archived.append(kind)
    write_sidecar(
        path, kind, data, layout=layout, state_dir=state_dir, replace=existing is not None
    )
    repair.written.append(kind)


def _archived(state_dir: Path, kind: str, hashes: Sequence[str]) -> bytes | None:
    for sha256 in hashes:
        try:
            data = archive_get(state_dir, sha256, kinds.sidecar_extension(kind))
        except StampdError:
            continue  # a corrupted copy: try the next proof
        if data is not None:
            return data
    return None


#: ``is_leftover(kind, sha256)``: whether a sidecar with these bytes is a proof that now lives
#: at another name (:func:`held_elsewhere`), so the copy at the old name can be retired.
IsLeftover = Callable[[str, str], bool]


def retire_leftovers(
    path: Path, *, layout: Layout, state_dir: Path, is_leftover: IsLeftover
) -> list[str]:
    """Archive and remove the sidecars at ``path``'s name once ``path`` itself is gone and
    their proofs live on at another name; return the kinds retired.

    A sidecar whose data file is gone for good (deleted, not renamed) stays: the file may come
    back from a backup, and its proof with it. A data file at ``path`` again means the
    sidecar is its proof, not a leftover (the job runner archives it when it writes the new
    content's proof).
    """
    if os.path.lexists(path):
        return []
    retired = []
    for spec in kinds.with_sidecars():
        kind = spec.name
        try:
            data = read_sidecar(path, kind, layout=layout, state_dir=state_dir)
        except StampdError:
            continue  # a symlink or a directory at a sidecar's name is not ours to remove
        if data is None or not is_leftover(kind, hashlib.sha256(data).hexdigest()):
            continue
        archive_put(state_dir, data, kinds.sidecar_extension(kind))
        where = sidecar_path(path, kind, layout=layout, state_dir=state_dir)
        if remove_if_holds(where, data):
            retired.append(kind)
    return retired
