"""Sidecar repair while the daemon runs: after a rename, and for what a scan finds amiss.

The rules are store/files/repair.py's; this is the worker that applies them off the loop, one
file at a time, holding the same per-path lock as the job runners (daemon/evidence/locks.py). It is
told about files by the recorder (a row that moved: ``mv a.txt b.txt`` seen live or by the
start-up scan) and by the scans (a sidecar missing or not holding the file's proof, or a
sidecar left at a name whose file is gone). Requests are coalesced per file; the queue is
bounded by the index (a request is an id or a path), not by the tree.

A sidecar that verifies for the content but is not one of the file's proofs (moved along
by a user from somewhere else) is adopted: archived and recorded as a proof. Verifying it
is the job runner's business for its kind (``ProofVerifier``); without one, such a sidecar
is archived and replaced by the proof stampd holds.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from stampd.daemon.evidence.locks import PathLocks
from stampd.daemon.service.logs import get_logger
from stampd.daemon.watch.recorder import Recorder
from stampd.store.files.repair import (
    Repair,
    RepairTarget,
    current_proofs,
    held_elsewhere,
    repair_sidecars,
    repair_target,
    retire_leftovers,
)
from stampd.store.files.sidecar import Layout
from stampd.store.index.jobs import NewProof, record_proof
from stampd.store.index.versions import Recorded

log = get_logger("stampd.repair")


class ProofVerifier(Protocol):
    """Whoever can tell that sidecar bytes prove a content (the runner of that kind)."""

    def adoptable(self, kind: str, data: bytes, *, sha256: str, sha512: str) -> NewProof | None:
        """The proof row for ``data`` if it verifies for the content, else None."""
        ...


@dataclass
class RepairCounts:
    """Running totals, for ``stampd rescan``, status and logs."""

    checked: int = 0
    written: int = 0
    adopted: int = 0
    retired: int = 0
    problems: int = 0

    @property
    def repaired(self) -> int:
        """Sidecars put right: written from the archive, adopted, or retired leftovers."""
        return self.written + self.adopted + self.retired


@dataclass
class _Request:
    file_id: int | None = None
    #: Names whose sidecars may be leftovers (the old name of a rename).
    leftovers: set[Path] = field(default_factory=set)


class SidecarRepairer:
    """Runs sidecar repairs until cancelled."""

    def __init__(
        self,
        *,
        recorder: Recorder,
        reader: Callable[[], sqlite3.Connection],
        state_dir: Path,
        layout_of: Callable[[Path], Layout | None],
        verifier: Callable[[], ProofVerifier | None],
        locks: PathLocks,
    ) -> None:
        self._recorder = recorder
        self._open_reader = reader
        self._state_dir = state_dir
        #: The sidecar layout of the watch holding a path (None: not under a watch).
        self._layout_of = layout_of
        self._verifier = verifier
        self._lock = locks
        self._files: dict[int, _Request] = {}
        self._names: set[Path] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.counts = RepairCounts()

    # --- requests (on the loop) ------------------------------------------------------------

    def after_commit(self, results: list[Recorded]) -> None:
        """Recorder callback: a row that moved needs its sidecars at the new name, and the
        old name's retired."""
        for result in results:
            if result.outcome == "renamed" and result.renamed_from is not None:
                request = self._files.setdefault(result.file_id, _Request(result.file_id))
                request.leftovers.add(result.renamed_from)
                self._wake_up()

    def check_file(self, file_id: int) -> None:
        """A scan saw this file's sidecar missing, or holding other bytes."""
        self._files.setdefault(file_id, _Request(file_id))
        self._wake_up()

    def check_leftover(self, path: Path) -> None:
        """A scan saw a sidecar at ``path``'s name and no file ``path``."""
        self._names.add(path)
        self._wake_up()

    def _wake_up(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def drained(self) -> None:
        """Wait until every request made so far is done."""
        await self._idle.wait()

    # --- the worker ------------------------------------------------------------------------

    async def run(self) -> None:
        conn = await asyncio.to_thread(self._open_reader)
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._files or self._names:
                    if self._files:
                        _file_id, request = self._files.popitem()
                        await self._one(conn, request)
                    else:
                        await self._leftover(conn, self._names.pop())
                self._idle.set()
        finally:
            conn.close()

    async def _one(self, conn: sqlite3.Connection, request: _Request) -> None:
        try:
            if request.file_id is not None:
                await self._repair(conn, request.file_id)
            for path in request.leftovers:
                await self._leftover(conn, path)
        except Exception:  # one file's surprise must not stop the repairs of every other
            log.exception("sidecar_repair_crashed", file_id=request.file_id)
            self.counts.problems += 1

    async def _repair(self, conn: sqlite3.Connection, file_id: int) -> None:
        target = await asyncio.to_thread(repair_target, conn, file_id)
        layout = None if target is None else self._layout_of(target.path)
        if target is None or layout is None:
            return
        proofs = await asyncio.to_thread(current_proofs, conn, file_id)
        if not proofs:
            return  # no complete proof yet: the job runner writes the first sidecar
        self.counts.checked += 1
        adopted: list[NewProof] = []
        async with self._lock(target.path):
            repair = await asyncio.to_thread(
                repair_sidecars,
                target.path,
                proofs,
                layout=layout,
                state_dir=self._state_dir,
                adopt=partial(self._adopt, target, adopted),
            )
            for proof in adopted:
                await self._recorder.call(
                    partial(
                        record_proof,
                        self._recorder.index,
                        version_id=target.version_id,
                        proof=proof,
                    )
                )
        self._report(target, repair)

    def _adopt(self, target: RepairTarget, adopted: list[NewProof], kind: str, data: bytes) -> bool:
        verifier = self._verifier()
        if verifier is None:
            return False
        proof = verifier.adoptable(kind, data, sha256=target.sha256, sha512=target.sha512)
        if proof is None:
            return False
        adopted.append(proof)
        return True

    def _report(self, target: RepairTarget, repair: Repair) -> None:
        self.counts.written += len(repair.written)
        self.counts.adopted += len(repair.adopted)
        self.counts.problems += len(repair.problems)
        if repair.changed or repair.archived:
            log.info(
                "sidecars_repaired",
                path=str(target.path),
                written=repair.written,
                adopted=repair.adopted,
                archived=repair.archived,
            )
        for kind, problem in repair.problems:
            log.warning("sidecar_not_repaired", path=str(target.path), kind=kind, reason=problem)

    async def _leftover(self, conn: sqlite3.Connection, path: Path) -> None:
        layout = self._layout_of(path)
        if layout is None:
            return

        def is_leftover(kind: str, sha256: str) -> bool:
            return held_elsewhere(conn, sha256=sha256, kind=kind, path=path)

        async with self._lock(path):
            retired = await asyncio.to_thread(
                retire_leftovers,
                path,
                layout=layout,
                state_dir=self._state_dir,
                is_leftover=is_leftover,
            )
        if retired:
            self.counts.retired += len(retired)
            log.info("sidecars_retired", path=str(path), kinds=retired, to="archive")
