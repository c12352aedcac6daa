"""Watch roots while the daemon runs: placed, lost, back again, and what is wrong with them.

Every second the roots are checked (daemon/watch/roots.py): a root that was deleted stops
being hashed below, one that came back is watched again and walked whole, and a problem is
logged once when it starts and once when it ends. While inotify watches ran out
(``unwatched_dirs``), every watch is rescanned every ``daemon.fallback_rescan`` instead.
A reload adds and removes watches through :meth:`RootWatch.add` and :meth:`RootWatch.remove`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from stampd.daemon.config.model import DaemonSettings
from stampd.daemon.service.logs import get_logger
from stampd.daemon.watch.rescans import Rescans
from stampd.daemon.watch.roots import check_root
from stampd.daemon.watch.runtime import Watches, WatchRuntime
from stampd.daemon.watch.watcher import Watcher

# The events were the daemon's before root watching had a module of its own: one logger name.
log = get_logger("stampd.daemon")

#: How often watch roots and the watch count are checked.
CHECK_INTERVAL_S = 1.0


class RootWatch:
    """Keeps each watch's root state (``root_dev``, ``root_problem``) up to date."""

    def __init__(
        self,
        *,
        watches: Watches,
        watcher: Watcher,
        rescans: Rescans,
        settings: DaemonSettings,
    ) -> None:
        self._watches = watches
        self._watcher = watcher
        self._rescans = rescans
        self._settings = settings

    def retune(self, settings: DaemonSettings) -> None:
        """A reload changed ``[daemon]`` (``fallback_rescan``)."""
        self._settings = settings

    @staticmethod
    def note_device(watch: WatchRuntime) -> None:
        """At start, while the root's watches are being placed: take its device now, so that
        what inotify reports meanwhile is hashed (and ``stampd stamp`` works); no scan yet."""
        try:
            watch.root_dev = watch.root.stat().st_dev
        except OSError:
            watch.root_dev = None

    def start_watching(self, watch: WatchRuntime, watched: bool) -> None:
        """A root is watched (at start, on a reload, or back again): scan all of it; or it
        is not, and says why (daemon/watch/roots.py)."""
        if watched:
            self.note_device(watch)
            if watch.root_dev is not None:  # else gone again at once: check_roots sees it
                self._rescans.request(watch)
        else:
            watch.root_dev = None  # nothing below a root without its watch is hashed
        self.check(watch)

    def add(self, watch: WatchRuntime) -> None:
        """A reload added ``watch``: keep it, watch its root and walk it."""
        self._watches.add(watch)
        self.start_watching(watch, self._watcher.add_root(watch.root))

    async def remove(self, root: Path) -> None:
        """A reload removed the watch of ``root``: stop watching it; its rescan waiters go."""
        self._watcher.remove_root(root)
        self._watches.remove(root)
        await self._rescans.full_scans.forget(root)

    async def run(self) -> None:
        """Re-watch roots that came back; rescan on the fallback interval while watches lack."""
        last_fallback = time.monotonic()
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            rewatched = set(self._watcher.check_roots())
            for watch in self._watches:
                if watch.root in rewatched:
                    self.start_watching(watch, True)
                    continue
                if not self._watcher.is_watched(watch.root):
                    watch.root_dev = None  # vanished while running: hash nothing below it
                self.check(watch)
            fallback = self._settings.fallback_rescan
            if self._rescans.unwatched_dirs and time.monotonic() - last_fallback > fallback:
                last_fallback = time.monotonic()
                self._rescans.rescan_all()

    def check(self, watch: WatchRuntime) -> None:
        """Note (and log, once) a watch root going bad or coming good again."""
        problem = check_root(watch.root, watched=watch.root_dev is not None)
        if problem == watch.root_problem:
            return
        was = watch.root_problem
        watch.root_problem = problem
        if problem is not None:
            log.warning(
                f"watch_root_{problem.kind}",
                path=str(watch.root),
                reason=problem.reason,
                hint=problem.hint,
            )
        elif was is not None:
            log.info("watch_root_ok", path=str(watch.root), was=was.reason)
            # Readable again (a chmod on the root changes no file's key): walk it, so that
            # files that could not be read meanwhile are hashed now.
            if watch.root_dev is not None:
                self._rescans.request(watch)
