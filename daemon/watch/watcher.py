"""The inotify side: one watchdog observer for every watch, feeding events to the asyncio loop.

The observer thread only translates and enqueues (reference/watching-and-service.md §2: an
exception in a handler stops dispatch forever, so every call is wrapped and can never raise).
Filtering, settling and hashing happen on the loop and in the hash pool, never here.

Also here: what watchdog does not tell its handler. A queue overflow (events were lost) is
only logged by watchdog, on the thread that reads inotify, while events read before it may
still wait in the observer's queue; so a log handler catches the message and queues a marker
behind those events, and the handler reports the overflow in stream order. A deleted watch
root stops its emitter for good, so :meth:`Watcher.check_roots` notices and reschedules once
the root is back; and inotify watches that could not be placed (``max_user_watches``) are
counted from ``/proc/self/fdinfo``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from stampd.daemon.service.logs import get_logger

log = get_logger("stampd.watcher")

ChangeKind = Literal[
    "created",
    "modified",
    "closed",
    "moved",
    "deleted",
    "attrib",
    "dir_created",
    "dir_deleted",
    "dir_moved",
]


@dataclass(frozen=True)
class Change:
    """One filesystem event, reduced to what settling needs."""

    kind: ChangeKind
    path: Path
    dest: Path | None = None


_KINDS: dict[type[FileSystemEvent], ChangeKind] = {
    FileCreatedEvent: "created",
    FileModifiedEvent: "modified",
    FileClosedEvent: "closed",
    FileMovedEvent: "moved",
    FileDeletedEvent: "deleted",
    FileAttribEvent: "attrib",
    DirCreatedEvent: "dir_created",
    DirDeletedEvent: "dir_deleted",
    DirMovedEvent: "dir_moved",
}


def _as_path(value: bytes | str) -> Path:
    return Path(value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value)


class _Enqueuer(FileSystemEventHandler):
    """Turns watchdog events into :class:`Change` and hands them on; never raises.

    Opened and closed-without-write events are dropped here: stampd's own hashing reads
    produce them. Attribute events pass: a chmod can make an unreadable file readable.
    """

    def __init__(self, deliver: Callable[[Change], None], on_overflow: Callable[[], None]) -> None:
        self._deliver = deliver
        self._on_overflow = on_overflow

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            if isinstance(event, _EventsLost):
                self._on_overflow()
                return
            kind = _KINDS.get(type(event))
            if kind is None:
                return
            dest = _as_path(event.dest_path) if event.dest_path else None
            self._deliver(Change(kind, _as_path(event.src_path), dest))
        except Exception:  # an exception here would stop the observer thread for good
            log.exception("watch_event_dropped", event_type=event.event_type)


class _EventsLost(FileSystemEvent):
    """Marker queued behind the events read before an overflow (never an inotify event)."""

    event_type = "stampd_events_lost"


class _OverflowListener(logging.Handler):
    """Catches watchdog's "queue overflowed" warning: the only sign that events were lost.

    The warning is logged on the reading thread; events read before it may not have reached
    the handler yet. Reporting the overflow at once would let the settler forget its "open for
    write" flags before a late ``modified`` sets one again, and that path would then wait for
    a close that was lost (``max_wait``, an hour). So ``on_lost`` queues a marker in order.
    """

    def __init__(self, on_lost: Callable[[], None]) -> None:
        super().__init__(level=logging.WARNING)
        self._on_lost = on_lost

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if "queue overflowed" in record.getMessage():
                self._on_lost()
        except Exception:  # logging handlers must never raise
            self.handleError(record)


# The event_filter given to watchdog also narrows the inotify mask: without it every read
# (stampd's own hashing included) costs an IN_OPEN and an IN_CLOSE_NOWRITE that watchdog
# decodes in Python — a third of the daemon's GIL time during a first scan (py-spy --gil).

# watchdog 7.1 logs the overflow on this logger (reference §2).
_OVERFLOW_LOGGER = "watchdog.observers.inotify_c"


class Watcher:
    """The observer over every watch root, with liveness and overflow tracking."""

    def __init__(
        self,
        roots: list[Path],
        *,
        deliver: Callable[[Change], None],
        on_overflow: Callable[[], None],
    ) -> None:
        self.roots = roots
        self._on_overflow = on_overflow
        self._handler = _Enqueuer(deliver, on_overflow)
        self._observer: BaseObserver = Observer()
        self._scheduled: dict[Path, ObservedWatch] = {}
        # Roots whose watch could not be placed, already logged: check_roots retries every
        # second, and one warning per outage says it (daemon/watch/roots.py reports it meanwhile).
        self._unwatchable: set[Path] = set()
        self._overflow = _OverflowListener(self._queue_overflow_marker)
        # The daemon places the watches in a thread (:meth:`place`) while the loop may add,
        # remove or re-check roots (a reload): one root's scheduling at a time.
        self._lock = threading.Lock()
        self._placed = False

    def start_observer(self) -> None:
        """Start dispatching, with no watch placed yet: cheap, whatever the trees' size.

        The inotify instance, and with it the kernel's event queue, exists since
        ``Observer()`` (watchdog 7.1 ``InotifyObserver.__init__``).
        """
        logging.getLogger(_OVERFLOW_LOGGER).addHandler(self._overflow)
        self._observer.start()

    def place(self) -> list[Path]:
        """Watch every root and each directory below it; returns the roots watched now
        (others wait for :meth:`check_roots`).

        Blocking, and it grows with the trees: watchdog's recursive schedule ``os.walk``s the
        whole tree, files included, and adds one inotify watch per directory (about 2 s
        wall, 1 s CPU for 10,000 directories of 100 files). The daemon calls it in a thread
        after READY (daemon/service/lifecycle.py).
        """
        watched = []
        try:
            for root in list(self.roots):
                with self._lock:
                    if root in self.roots and (root in self._scheduled or self._schedule(root)):
                        watched.append(root)
        finally:
            self._placed = True
        return watched

    def placing(self) -> bool:
        """Whether the watches are still to be placed (:meth:`place` has not returned yet)."""
        return not self._placed

    def _queue_overflow_marker(self) -> None:
        """On the reading thread: report the overflow behind the events already queued."""
        watches = list(self._scheduled.values())
        if not watches:  # nothing to dispatch through; nothing queued could be lost either
            self._on_overflow()
            return
        self._observer.event_queue.put((_EventsLost(""), watches[0]))

    def _schedule(self, root: Path) -> bool:
        if not root.is_dir():
            return False
        try:
            self._scheduled[root] = self._observer.schedule(
                self._handler, str(root), recursive=True, event_filter=list(_KINDS)
            )
        except OSError as error:
            if root not in self._unwatchable:
                self._unwatchable.add(root)
                log.warning("watch_root_unwatchable", path=str(root), reason=error.strerror)
            return False
        self._unwatchable.discard(root)
        return True

    def check_roots(self) -> list[Path]:
        """Re-watch roots whose emitter died (root deleted/unmounted) once they are back.

        Returns the roots that were (re)scheduled now; each needs a full scan, since nothing
        was seen while it was gone.
        """
        with self._lock:
            return self._check_roots()

    def _check_roots(self) -> list[Path]:
        alive = {emitter.watch for emitter in self._observer.emitters if emitter.is_alive()}
        restarted = []
        for root in self.roots:
            watch = self._scheduled.get(root)
            if watch is not None and watch in alive and root.is_dir():
                continue
            if watch is not None:
                log.warning("watch_root_lost", path=str(root))
                self._observer.unschedule(watch)
                del self._scheduled[root]
            if self._schedule(root):
                log.info("watch_root_rewatched", path=str(root))
                restarted.append(root)
        return restarted

    def is_watched(self, root: Path) -> bool:
        """Whether ``root`` has its inotify watch now (as of the last :meth:`check_roots`)."""
        return root in self._scheduled

    def add_root(self, root: Path) -> bool:
        """Watch one more root (a reload); True if it is watched now, else once it exists."""
        with self._lock:
            if root not in self.roots:
                self.roots.append(root)
            return root in self._scheduled or self._schedule(root)

    def remove_root(self, root: Path) -> None:
        """Stop watching ``root`` (a reload removed its watch)."""
        with self._lock:
            if root in self.roots:
                self.roots.remove(root)
            self._unwatchable.discard(root)
            watch = self._scheduled.pop(root, None)
        if watch is not None:
            with contextlib.suppress(KeyError):  # its emitter may have died with the root
                self._observer.unschedule(watch)

    def observer_alive(self) -> bool:
        """Whether events are still dispatched: an exception in a handler ends the observer
        thread while its emitters keep queueing (reference §2, "handler exceptions")."""
        return self._observer.is_alive()

    def stop(self) -> None:
        """Stop watching and wait for the observer thread."""
        logging.getLogger(_OVERFLOW_LOGGER).removeHandler(self._overflow)
        self._observer.stop()
        self._observer.join(timeout=10)


_INOTIFY_WD = re.compile(rb"^inotify wd:", re.MULTILINE)


def count_inotify_watches(fdinfo: Path = Path("/proc/self/fdinfo")) -> int:
    """inotify watches held by this process: one ``inotify wd:`` line per watch in fdinfo.

    Needs no private watchdog attribute (reference §2, "watch-limit exhaustion").
    """
    total = 0
    for entry in fdinfo.iterdir():
        try:
            total += len(_INOTIFY_WD.findall(entry.read_bytes()))
        except OSError:  # the descriptor closed while we looked
            continue
    return total
