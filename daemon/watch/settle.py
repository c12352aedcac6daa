"""When a file has settled: the close-aware settle rule (reference/watching-and-service.md §3.1).

A pure, synchronous state machine: the event loop feeds it filesystem events and scan
candidates, and a periodic tick calls :meth:`Settler.poll`, which returns the paths that are
ready to hash. The clock and ``lstat`` are injected so tests need not sleep.

Per pending path it keeps the time of the last event, the time first seen, an open-for-write
flag and the last ``lstat`` snapshot. A path is ready when (§3.1):

1. there was no event for ``quiet`` seconds;
2. it is not open for write (a ``modified`` event without a later ``closed``), unless it was
   first seen at least ``max_wait`` seconds ago — a writer may hold a file open for ever;
3. ``lstat`` now equals the snapshot taken at least ``quiet`` earlier. A path that is gone or
   not a regular file is dropped; a changed snapshot is stored and restarts the wait.

A quiet period alone would stamp a slow writer's partial file several times (§3.2); the close
flag alone would never stamp files that get no ``closed`` under their final name (move-in,
``cp -r``, hard links, ``O_TMPFILE``), hence both.
"""

from __future__ import annotations

import heapq
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Literal

from stampd.store.files.filestat import FileStat

EventKind = Literal["created", "modified", "closed", "moved", "deleted"]
"""The file events the settle rule uses. ``opened``, ``closed_no_write``, attribute and
directory events are not among them (§3.1): the caller drops them."""


@dataclass(frozen=True)
class Ready:
    """A settled file: hash it, and expect ``stat``'s ``(dev, ino)`` when opening it (§3.3)."""

    path: Path
    stat: FileStat


@dataclass(slots=True)
class _Entry:
    """What the settle rule keeps per pending path."""

    first_seen: float
    last_event: float
    open_for_write: bool = False
    #: Set by ``stampd stamp PATH``: no quiet period, one ``lstat`` suffices.
    immediate: bool = False
    snapshot: FileStat | None = None
    snapshot_at: float = 0.0
    #: The heap item that is this entry's live one (older items for the path are stale).
    token: int = -1
    scheduled: float = 0.0


class Settler:
    """The settle state of one watch's pending paths.

    Paths are whatever the caller passes (absolute, already filtered by
    :class:`stampd.daemon.watch.filters.WatchFilter`); this class does no filtering.
    Each pending path has exactly one live item in a heap ordered by the earliest time it may
    be ready, so :meth:`poll` costs O(entries due · log n) however many are pending (a scan may
    add 100 000). Events never touch the heap unless they make a path due *earlier*; an item
    popped too early is pushed back at the entry's real due time, and superseded items are
    skipped when popped (lazy deletion).
    """

    def __init__(
        self,
        *,
        quiet: float,
        max_wait: float,
        clock: Callable[[], float] = time.monotonic,
        lstat: Callable[[Path], os.stat_result] = os.lstat,
    ) -> None:
        """``quiet``: seconds without events and between two equal ``lstat``\\ s (the watch's
        ``quiet``); ``max_wait``: seconds after which a path still open for write is treated
        as closed; ``clock``: monotonic seconds."""
        if quiet < 0 or max_wait < 0:
            raise ValueError(f"quiet and max_wait must be >= 0, got {quiet} and {max_wait}")
        self._quiet = quiet
        self._max_wait = max_wait
        self._clock = clock
        self._lstat = lstat
        self._entries: dict[Path, _Entry] = {}
        self._heap: list[tuple[float, int, Path]] = []
        self._tokens = itertools.count()

    def on_event(self, kind: EventKind, path: Path, dest: Path | None = None) -> None:
        """Apply one filesystem event (§3.1).

        ``created``, ``modified``, ``closed``: ``path`` is a candidate and its wait restarts;
        ``modified`` marks it open for write, ``closed`` clears that. ``moved``: the state of
        ``path`` (open flag, first seen) moves to ``dest``, which is a candidate even when
        ``path`` was unknown — an atomic save or rsync gives the final name only the move
        (§1). ``deleted``: the path is dropped.

        The caller filters both names first: a move from a filtered name (a temp file) is
        still reported, with ``path`` unknown here; a move *to* a filtered name should be
        reported as ``deleted`` of ``path``.
        """
        now = self._clock()
        if kind == "deleted":
            self.forget(path)
            return
        if kind == "moved":
            if dest is None:
                raise ValueError("a moved event needs its destination")
            source = self._entries.pop(path, None)
            # A pending entry of dest is replaced: the file it described was renamed over.
            # The snapshot does not travel: rename changes ctime, so it could never match.
            moved = self._entries[dest] = _Entry(
                first_seen=now if source is None else source.first_seen,
                last_event=now,
                open_for_write=source is not None and source.open_for_write,
            )
            self._snapshot_now(dest, moved, now)
            self._push(dest, moved, max(self._due(moved), now))
            return
        if kind not in ("created", "modified", "closed"):
            raise ValueError(f"unknown event kind {kind!r}")
        entry = self._entries.get(path)
        if entry is None:
            entry = self._entries[path] = _Entry(first_seen=now, last_event=now)
        else:
            entry.last_event = now
            # An event means someone writes, so an earlier `stampd stamp` request waits like
            # the rest.
            entry.immediate = False
        # A snapshot older than an event says nothing about the file now, so take one now:
        # the event is already behind us, and any later write brings another event (which
        # takes another snapshot). Rule 3 then needs one more equal lstat `quiet` from now,
        # so a closed file is ready `quiet` after its last event, not twice that.
        self._snapshot_now(path, entry, now)
        if kind == "modified":
            entry.open_for_write = True
        elif kind == "closed":
            entry.open_for_write = False
        self._reschedule_if_earlier(path, entry, now)

    def _snapshot_now(self, path: Path, entry: _Entry, now: float) -> None:
        try:
            entry.snapshot, entry.snapshot_at = FileStat.of(self._lstat(path)), now
        except OSError:  # gone already: the poll drops it, or a later event brings it back
            entry.snapshot = None

    def add_candidate(
        self,
        path: Path,
        *,
        stat: FileStat | None = None,
        changed_at: float | None = None,
        immediate: bool = False,
    ) -> None:
        """Add a path found by the scan or named by ``stampd stamp PATH``.

        ``stat``: the snapshot the scan took (now). ``changed_at``: a clock value for when the
        file last changed, computed from the *later* of its mtime and ctime (for example
        ``clock() - (time.time() - max(st_mtime, st_ctime))``). Given both, the snapshot
        counts as taken at ``changed_at``: an equal ``lstat`` later proves nothing changed
        since then, so a file older than ``quiet`` is ready at the next poll after one more
        equal ``lstat``.

        ``immediate=True`` (the user asked to stamp it now) skips rules 1 and 3: the path is
        ready at the next poll whose ``lstat`` shows a regular file. The user vouches that
        the file is complete, and the hash stage still discards a read during which the file
        changed (§3.3 step 4). Rule 2 still holds: a path known to be open for write waits
        for ``closed`` or ``max_wait``.

        A path already pending keeps its state (open flag, last event, first seen): events
        know more than a scan. It only adopts ``stat`` if it had no snapshot yet.
        """
        now = self._clock()
        entry = self._entries.get(path)
        if entry is None:
            changed = now if changed_at is None else min(changed_at, now)
            entry = self._entries[path] = _Entry(first_seen=now, last_event=changed)
            if stat is not None:
                entry.snapshot, entry.snapshot_at = stat, changed
        elif stat is not None and entry.snapshot is None:
            entry.snapshot, entry.snapshot_at = stat, now
        entry.immediate = entry.immediate or immediate
        self._reschedule_if_earlier(path, entry, now)

    def poll(self) -> list[Ready]:
        """The paths that are ready now, each returned once and then forgotten.

        Only entries whose due time has come are looked at (and ``lstat``\\ ed). Any
        ``OSError`` from ``lstat`` drops the entry without a report: ENOENT and ENOTDIR mean
        the file is gone; EACCES, ELOOP and the like mean it could not be hashed either, and
        the reconciliation scan, which walks the same directories, meets the same error and
        reports it. Keeping the entry would retry an unreadable path for ever.
        """
        now = self._clock()
        ready: list[Ready] = []
        # Pushed after the loop, so each entry is looked at (and lstat'ed) at most once per
        # poll even when quiet is 0.
        later: list[tuple[Path, _Entry, float]] = []
        while self._heap and self._heap[0][0] <= now:
            _, token, path = heapq.heappop(self._heap)
            entry = self._entries.get(path)
            if entry is None or entry.token != token:
                continue  # stale: the path was dropped or rescheduled since
            due = self._due(entry)
            if due > now:
                later.append((path, entry, due))  # events arrived since it was scheduled
                continue
            try:
                result = self._lstat(path)
            except OSError:
                del self._entries[path]
                continue
            if not S_ISREG(result.st_mode):
                # §1: every event path is a hint; symlinks, FIFOs, sockets and directories
                # are never stamped (lstat: a symlink is not followed).
                del self._entries[path]
                continue
            snapshot = FileStat.of(result)
            if entry.immediate or snapshot == entry.snapshot:
                del self._entries[path]
                ready.append(Ready(path, snapshot))
            else:
                entry.snapshot, entry.snapshot_at = snapshot, now
                later.append((path, entry, self._due(entry)))
        for path, entry, due in later:
            self._push(path, entry, due)
        return ready

    def retune(self, *, quiet: float, max_wait: float) -> None:
        """New ``quiet`` and ``max_wait`` (a reload); pending paths keep their history."""
        if quiet < 0 or max_wait < 0:
            raise ValueError(f"quiet and max_wait must be >= 0, got {quiet} and {max_wait}")
        self._quiet, self._max_wait = quiet, max_wait
        now = self._clock()
        # A longer wait needs nothing: an entry popped early is pushed back (poll).
        for path, entry in self._entries.items():
            self._reschedule_if_earlier(path, entry, now)

    def forget(self, path: Path) -> None:
        """Drop ``path`` if pending (deleted, or handed elsewhere)."""
        self._entries.pop(path, None)

    def forget_under(self, directory: Path) -> None:
        """Drop every pending path at or below ``directory`` (deleted or moved out)."""
        for path in [path for path in self._entries if path.is_relative_to(directory)]:
            del self._entries[path]

    def events_lost(self) -> None:
        """The kernel dropped events (inotify queue overflow): a lost ``closed`` would leave a
        path "open for write" until ``max_wait``, so no open flag is trusted any more. The
        quiet period and the two equal ``lstat``s still hold back a file that is still written.
        """
        now = self._clock()
        for path, entry in self._entries.items():
            if entry.open_for_write:
                entry.open_for_write = False
                self._reschedule_if_earlier(path, entry, now)

    def next_due(self) -> float | None:
        """The clock value at which :meth:`poll` may next return something (possibly in the
        past: poll now), or None when nothing is pending. Early rather than late: events
        since may push the real time back."""
        while self._heap:
            at, token, path = self._heap[0]
            entry = self._entries.get(path)
            if entry is not None and entry.token == token:
                return at
            heapq.heappop(self._heap)
        return None

    def __contains__(self, path: object) -> bool:
        """Whether ``path`` is pending (events or a scan put it here and it is not ready)."""
        return path in self._entries

    def __len__(self) -> int:
        """The number of pending paths."""
        return len(self._entries)

    def _due(self, entry: _Entry) -> float:
        """The earliest clock value at which ``entry`` can meet rules 1-3 (before ``lstat``)."""
        due = -float("inf")
        if entry.open_for_write:
            due = entry.first_seen + self._max_wait  # rule 2
        if entry.immediate:
            return due
        due = max(due, entry.last_event + self._quiet)  # rule 1
        if entry.snapshot is not None:
            due = max(due, entry.snapshot_at + self._quiet)  # rule 3
        return due

    def _reschedule_if_earlier(self, path: Path, entry: _Entry, now: float) -> None:
        """Push a new heap item if ``entry`` is new or now due before its item (a ``closed``
        ends the wait for ``max_wait``); otherwise the item stays and is re-pushed if popped
        early, so a stream of events costs no heap work."""
        due = max(self._due(entry), now)
        if entry.token < 0 or due < entry.scheduled:
            self._push(path, entry, due)

    def _push(self, path: Path, entry: _Entry, at: float) -> None:
        """Make ``(at, path)`` the live heap item of ``entry``; earlier items become stale."""
        entry.token = next(self._tokens)
        entry.scheduled = at
        heapq.heappush(self._heap, (at, entry.token, path))
        # Stale items of dropped or rescheduled paths would otherwise wait until their time
        # (up to max_wait); rebuilding from the live items keeps the heap O(pending).
        if len(self._heap) > 2 * len(self._entries) + 1024:
            self._heap = [(e.scheduled, e.token, p) for p, e in self._entries.items()]
            heapq.heapify(self._heap)
