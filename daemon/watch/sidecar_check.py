"""The reconciliation scan's look at sidecars: each proof where backup tools look for it.

The scan lists every directory anyway (daemon/watch/scan.py), so for the ``adjacent`` layout
checking that ``FILE.tsr`` exists costs nothing but a set lookup: a sidecar deleted by hand,
or never written because a rename raced the job that obtained it, is found by the next walk
of any kind. For ``mirror`` the sidecars' directory under the state directory is listed
once per directory that has proofs. A ``deep`` check (``stampd rescan``) also reads each
sidecar and compares its bytes' SHA-256 with the file's proofs: a sidecar that holds another
file's proof, or something else, is found too.

The listing also shows the temp files of writes a killed daemon never finished; those older
than this daemon's start are removed (store/files/leftovers.py).

The same listing shows sidecars whose data file is gone (``a.txt.tsr`` next to no
``a.txt``): leftovers of a rename the daemon did not see. Whether they can be retired is
decided with the index (store/files/repair.py); a deleted file's sidecar stays.

Runs on the scan's thread; what it finds is handed to the loop through the callbacks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path

from stampd.daemon.watch.filters import names_ending_in
from stampd.store import kinds
from stampd.store.errors import StampdError
from stampd.store.files.leftovers import remove_stale_temps
from stampd.store.files.sidecar import Layout, data_name_of, read_sidecar, sidecar_suffixes
from stampd.store.index.scan_rows import StampedRow


class SidecarCheck:
    """Checks the sidecars of one walk (see the module docstring)."""

    def __init__(
        self,
        *,
        layout: Layout,
        state_dir: Path,
        deep: bool,
        on_file: Callable[[int], object],
        on_leftover: Callable[[Path], object],
        stale_before: float | None = None,
    ) -> None:
        self._layout = layout
        #: Temp files last modified before this (the daemon's start) are a killed run's
        #: leftovers and are removed (store/files/leftovers.py); None leaves them.
        self._stale_before = stale_before
        self._state_dir = state_dir
        self._deep = deep
        self._on_file = on_file
        self._on_leftover = on_leftover
        #: Files whose sidecars were looked at, and those handed over for repair.
        self.checked = 0
        self.flagged = 0
        self.leftovers = 0
        self.temps_removed = 0

    def directory(
        self,
        directory: str,
        names: set[str],
        stamped: Mapping[str, StampedRow],
        present: set[str],
    ) -> None:
        """One directory of the walk ('s :class:`~stampd.daemon.watch.scan.DirectoryCheck`)."""
        rows = [row for name, row in stamped.items() if row.sidecars and name in present]
        sidecar_names = names if self._layout == "adjacent" else None
        if rows:
            if sidecar_names is None:
                sidecar_names = self._mirror_names(directory)
            for row in rows:
                self.checked += 1
                if not self._in_place(directory, row, sidecar_names):
                    self.flagged += 1
                    self._on_file(row.file_id)
        if sidecar_names is None and self._layout == "mirror":
            sidecar_names = self._mirror_names(directory)
        # One endswith per name picks out what can be ours at all, a sidecar or a temp file
        # (leftovers.py: every one ends in ".tmp"): most names of a directory are neither.
        ours = names_ending_in(names, (*sidecar_suffixes(), ".tmp"))
        if self._stale_before is not None:
            temps = [name for name in ours if name.endswith(".tmp")]
            self._remove_stale_temps(directory, temps, sidecar_names)
        for name in ours if self._layout == "adjacent" else sidecar_names or ():
            data = data_name_of(name)
            if data is not None and data not in names:
                self.leftovers += 1
                self._on_leftover(Path(directory, data))

    def _remove_stale_temps(
        self, directory: str, temps: list[str], sidecar_names: set[str] | None
    ) -> None:
        assert self._stale_before is not None
        if temps:  # most directories have none: no Path built for them
            self.temps_removed += remove_stale_temps(
                Path(directory), temps, before=self._stale_before
            )
        if self._layout == "mirror" and sidecar_names:
            mirrored = self._state_dir / "mirror" / Path(directory).relative_to("/")
            self.temps_removed += remove_stale_temps(
                mirrored, sidecar_names, before=self._stale_before
            )

    def _in_place(self, directory: str, row: StampedRow, sidecar_names: set[str]) -> bool:
        for kind, hashes in row.sidecars.items():
            name = f"{row.name}.{kinds.sidecar_extension(kind)}"
            if name not in sidecar_names:
                return False
            if self._deep and not self._holds(Path(directory, row.name), kind, hashes):
                return False
        return True

    def _holds(self, path: Path, kind: str, hashes: frozenset[str]) -> bool:
        try:
            data = read_sidecar(path, kind, layout=self._layout, state_dir=self._state_dir)
        except StampdError:
            return False  # a symlink, a directory: the repair reports it
        return data is not None and hashlib.sha256(data).hexdigest() in hashes

    def _mirror_names(self, directory: str) -> set[str]:
        mirrored = self._state_dir / "mirror" / Path(directory).relative_to("/")
        try:
            return {entry.name for entry in mirrored.iterdir()}
        except OSError:
            return set()  # nothing mirrored here yet
