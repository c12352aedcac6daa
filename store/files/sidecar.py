"""Sidecar naming, writing and reading, and the one "is this file ours?" predicate.

Proofs live next to the data as ``FILE.tsr``, ``FILE.ots``, ``FILE.p7s`` and ``FILE.ers``
(DESIGN §1, §5), the names the OpenTimestamps client uses too, so backup tools carry them
along (reference §5.3). The ``mirror`` layout puts the same names under the state directory
for trees stampd may not write to. Which kinds have a sidecar, and its extension, is the
registry's to say (:mod:`stampd.store.kinds`): a kind registered later (or by a test) gets
its sidecars named and recognised like the built-in ones.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath
from typing import Literal

from stampd.store import kinds
from stampd.store.files.atomic import DirectorySyncs, directory, read_path, write_atomic
from stampd.store.kinds import EvidenceKind, KindSpec

Layout = Literal["adjacent", "mirror"]
"""``adjacent``: next to the data file; ``mirror``: under ``STATE/mirror/<absolute path>``."""

MAX_SIDECAR_BYTES = 16 * 1024 * 1024
"""Read cap for a sidecar: real proofs are kilobytes; evidence records with long renewal
chains stay far below this, and a larger file is not one stampd wrote."""

# What write_atomic creates: `.{name}.stampd-{16 hex}.tmp` (name possibly shortened).
_TEMP_NAME = re.compile(r"\..*\.stampd-[0-9a-f]{16}\.tmp", re.DOTALL)
# `ots upgrade` keeps the previous proof as FILE.ots.bak (reference §5.3).
_OTS_BACKUP_SUFFIX = f".{kinds.sidecar_extension(EvidenceKind.OTS)}.bak"


class _Suffixes:
    """The sidecar suffixes of the registered kinds, worked out again only when the registry
    changes.

    Asked for on the hot path — every watcher event (:func:`is_ours`) and every name a scan
    lists (:func:`data_name_of`) — so the check is a comparison of the registry's tuple with
    the one last seen: a fraction of a microsecond, as its items are the same objects.
    """

    def __init__(self) -> None:
        self._seen: tuple[tuple[KindSpec, ...], tuple[str, ...], tuple[str, ...]] = ((), (), ())

    def get(self, *, backups: bool) -> tuple[str, ...]:
        """``.tsr``, ``.ots``, … (and ``.ots.bak`` with ``backups``)."""
        known = kinds.known()
        seen, plain, with_backups = self._seen
        if known != seen:
            plain = tuple(f".{kind.sidecar}" for kind in known if kind.sidecar is not None)
            with_backups = (*plain, _OTS_BACKUP_SUFFIX)
            # One assignment: a thread reading meanwhile sees the old triple or the new one.
            self._seen = (known, plain, with_backups)
        return with_backups if backups else plain


_suffixes = _Suffixes()


def sidecar_suffixes(*, backups: bool = False) -> tuple[str, ...]:
    """``.tsr``, ``.ots``, … of the registered kinds (and ``.ots.bak`` with ``backups``): a
    name that ends in none of them is no sidecar's (one ``str.endswith`` for a whole tuple)."""
    return _suffixes.get(backups=backups)


def sidecar_path(data_path: Path, kind: str, *, layout: Layout, state_dir: Path) -> Path:
    """Where the ``kind`` sidecar of ``data_path`` lives.

    ``adjacent``: ``/dir/FILE.tsr``. ``mirror``: ``state_dir/mirror/dir/FILE.tsr``, the data
    file's absolute path below ``mirror/`` so an operator can find it by eye. Raises
    ValueError for a relative or non-canonical ``data_path``, an unknown layout, or a kind
    without a sidecar (``attest`` receipts live in the index, DESIGN §5).
    """
    extension = kinds.sidecar_extension(kind)
    if not data_path.is_absolute():
        raise ValueError(f"data path must be absolute: {data_path}")
    if data_path.name in {"", ".."} or ".." in data_path.parts:
        raise ValueError(f"data path must name a file without '..': {data_path}")
    name = f"{data_path.name}.{extension}"
    if layout == "adjacent":
        return data_path.parent / name
    if layout == "mirror":
        if not state_dir.is_absolute():
            raise ValueError(f"state directory must be absolute: {state_dir}")
        return state_dir / "mirror" / data_path.parent.relative_to("/") / name
    raise ValueError(f"unknown sidecar layout {layout!r}; expected 'adjacent' or 'mirror'")


def is_ours(path: str | Path) -> bool:
    """Whether ``path`` names a file stampd itself writes: a sidecar, a temp file of
    :func:`stampd.store.files.atomic.write_atomic`, or the ``FILE.ots.bak`` left by ``ots upgrade``.

    The watcher uses it to ignore our own writes, so that writing a proof never makes a
    proof of the proof (reference §3.3). Name-based only: no I/O, so it is cheap per event.
    """
    name = PurePath(path).name
    if _TEMP_NAME.fullmatch(name):
        return True
    return data_name_of(name, backups=True) is not None


def data_name_of(name: str, *, backups: bool = False) -> str | None:
    """The name of the data file that the sidecar ``name`` belongs to (``a.txt.tsr`` →
    ``a.txt``), or None when ``name`` is not a sidecar's. ``backups``: ``a.txt.ots.bak``, the
    previous proof ``ots upgrade`` keeps, counts too. By name only, like :func:`is_ours`.
    """
    for suffix in _suffixes.get(backups=backups):
        # A sidecar belongs to a data file, so something must precede the suffix.
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def write_sidecar(
    data_path: Path,
    kind: str,
    data: bytes,
    *,
    layout: Layout,
    state_dir: Path,
    replace: bool = False,
    syncs: DirectorySyncs | None = None,
) -> Path:
    """Atomically write ``data`` as the ``kind`` sidecar of ``data_path``; return its path.

    Written through directory fds with no symlink followed and the data file untouched
    (DESIGN rule 4), mode 0644 (reference §5.3). ``replace=False`` raises
    :class:`~stampd.store.errors.SidecarExistsError` if the sidecar exists (rule 6: an
    existing proof is adopted or archived, never silently overwritten). With ``syncs``, the
    directory's fsync is left to the caller (:class:`~.atomic.DirectorySyncs`).
    """
    path = sidecar_path(data_path, kind, layout=layout, state_dir=state_dir)
    # Adjacent: the data file's directory must exist already; stampd never creates
    # directories in the user's tree. Mirror: the tree under the state dir is ours to build.
    with directory(path.parent, create=layout == "mirror") as dir_fd:
        write_atomic(dir_fd, path.name, data, mode=0o644, replace=replace, syncs=syncs)
    return path


def read_sidecar(
    data_path: Path,
    kind: str,
    *,
    layout: Layout,
    state_dir: Path,
    max_bytes: int = MAX_SIDECAR_BYTES,
) -> bytes | None:
    """The bytes of the ``kind`` sidecar of ``data_path``, or None when there is none.

    Read without following symlinks (DESIGN rule 4); a symlink or a non-regular file
    raises :class:`~stampd.store.errors.UnsafePathError`.
    """
    path = sidecar_path(data_path, kind, layout=layout, state_dir=state_dir)
    return read_path(path, max_bytes=max_bytes)
