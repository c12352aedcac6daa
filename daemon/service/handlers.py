"""The control commands the daemon answers: ``status``, ``stamp``, ``rescan``, ``upgrade``,
``reload``, ``pause``, ``resume`` (DESIGN §8; the socket itself is
:mod:`stampd.daemon.service.control`).

Each handler reads the components it needs — never the daemon that wired them — and answers
with a typed reply of :mod:`stampd.daemon.service.replies`, the same types the CLI reads.
A malformed request raises :class:`ControlRequestError` (``bad_request``); one path that
cannot be stamped is a refusal inside an otherwise normal ``stamp`` reply.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stampd.daemon import __version__
from stampd.daemon.evidence.repair import RepairCounts, SidecarRepairer
from stampd.daemon.evidence.runners import EvidenceRunners
from stampd.daemon.service.control import ControlRequestError, Handler
from stampd.daemon.service.health import HealthMonitor
from stampd.daemon.service.logs import get_logger
from stampd.daemon.service.pause import PauseState
from stampd.daemon.service.reloading import Reloader
from stampd.daemon.service.replies import (
    PauseReply,
    ReloadReply,
    RepairSummary,
    RescanReply,
    ResumeReply,
    RootStatus,
    ScanSummary,
    StampRefusal,
    StampReply,
    StampResult,
    StatusReply,
    UpgradeReply,
)
from stampd.daemon.service.stamp_request import (
    Refusal,
    refusal_after_hashing,
    requested_path,
    stamp_target,
)
from stampd.daemon.watch.intake import Intake, Stamped
from stampd.daemon.watch.recorder import Recorder
from stampd.daemon.watch.rescans import Rescans
from stampd.daemon.watch.runtime import Watches
from stampd.daemon.watch.scan import ScanReport
from stampd.store import kinds
from stampd.store.files.pathnames import escape
from stampd.store.index.jobs import make_upgrades_due
from stampd.store.index.times import format_time, utc_now
from stampd.store.kinds import JobAction

# The events were the daemon's before the handlers had a module of their own: one logger name.
log = get_logger("stampd.daemon")

#: Most paths one ``stamp`` request may name (each is hashed before the reply).
MAX_STAMP_PATHS = 1000


class ControlHandlers:
    """Answers control requests from the running components."""

    def __init__(
        self,
        *,
        config_source: Path,
        started_at: str,
        reloader: Reloader,
        watches: Watches,
        intake: Intake,
        recorder: Recorder,
        rescans: Rescans,
        repairer: SidecarRepairer,
        runners: EvidenceRunners,
        pause: PauseState,
        health: HealthMonitor,
        metrics_url: Callable[[], str | None],
    ) -> None:
        self._config_source = config_source
        self._started_at = started_at
        self._reloader = reloader
        self._watches = watches
        self._intake = intake
        self._recorder = recorder
        self._rescans = rescans
        self._repairer = repairer
        self._runners = runners
        self._pause = pause
        self._health = health
        self._metrics_url = metrics_url

    def handlers(self) -> dict[str, Handler]:
        """Every command by name, for the :class:`ControlServer`."""
        return {
            "status": self.status,
            "stamp": self.stamp,
            "rescan": self.rescan,
            "upgrade": self.upgrade,
            "reload": self.reload,
            "pause": self.pause,
            "resume": self.resume,
        }

    # --- status ------------------------------------------------------------------------------

    async def status(self, _request: Mapping[str, Any]) -> Mapping[str, object]:
        """The live state, and each evidence runner's status under its kind's name."""
        health, rescans = self._health.health, self._rescans
        reply: StatusReply = {
            "pid": os.getpid(),
            "version": __version__,
            "started_at": self._started_at,
            "config": str(self._config_source),
            "reloads": self._reloader.reloads,
            "healthy": health.ok,
            "problems": list(health.problems),
            "paused_since": self._pause.since,
            "watches": [str(root) for root in self._watches.roots],
            "settling": self._watches.settling(),
            "hashing": self._intake.hashing,
            "recording": self._recorder.backlog(),
            "scanning": rescans.scanning,
            "scan_files": rescans.scan_files if rescans.scanning else None,
            "scans_done": rescans.scans_done,
            "subtree_scans_done": rescans.subtree_scans_done,
            "scans_pending": rescans.pending,
            "watchdog_pinged": health.alive,
            "scans": self._root_statuses(),
            "inotify_watches": rescans.inotify_watches,
            "unwatched_dirs": rescans.unwatched_dirs,
            "inotify_overflows": rescans.overflows,
            "metrics": self._metrics_url(),
        }
        return {**reply, **self._runners.status()}

    def _root_statuses(self) -> list[RootStatus]:
        return [
            {
                "root": str(watch.root),
                "watched": watch.root_dev is not None,
                "ok": watch.root_dev is not None and watch.root_problem is None,
                "problem": watch.root_problem.reason if watch.root_problem else None,
                "hint": watch.root_problem.hint if watch.root_problem else None,
                "directories": watch.directories,
                "last_full_scan_at": _iso(watch.last_scan_at),
                "last_full_scan_seconds": watch.last_scan_seconds,
            }
            for watch in self._watches
        ]

    # --- stamp -------------------------------------------------------------------------------

    async def stamp(self, request: Mapping[str, Any]) -> StampReply:
        """Record each requested file now, without waiting for it to settle."""
        paths = request.get("paths")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise ControlRequestError('"stamp" needs "paths": a list of absolute paths')
        if len(paths) > MAX_STAMP_PATHS:
            raise ControlRequestError(f'"stamp" takes at most {MAX_STAMP_PATHS} paths at once')
        return {"results": [await self._stamp_one(path) for path in paths]}

    async def _stamp_one(self, text: str) -> StampResult | StampRefusal:
        """Record one file now (the operator says it has settled)."""
        target = stamp_target(self._watches, text)
        if isinstance(target, Refusal):
            return target.reply(text)
        watch = target.watch
        outcome = await self._intake.stamp_now(watch, target.path, root_dev=target.root_dev)
        if not isinstance(outcome, Stamped):
            return refusal_after_hashing(target.path, outcome).reply(text)
        recorded, hashed = outcome.recorded, outcome.hashed
        return {
            "path": escape(target.path),
            "recorded": True,
            "outcome": recorded.outcome,
            "version_id": recorded.version_id,
            "size": hashed.stat.size,
            "sha256": hashed.digests.sha256_hex,
            "queued": list(watch.config.evidence) if recorded.job_ids else [],
        }

    # --- rescan ------------------------------------------------------------------------------

    async def rescan(self, request: Mapping[str, Any]) -> RescanReply:
        """Ask for deep full scans of every watch (or the one holding ``path``); with
        ``wait``, answer once the walks and the repairs they asked for are done."""
        text = request.get("path")
        if text is None:
            targets = list(self._watches)
        elif isinstance(text, str) and text.startswith("/"):
            path = requested_path(text)
            if isinstance(path, Refusal):
                raise ControlRequestError(f'"path": {path.message}')
            targets = [watch for watch in self._watches if watch.contains(path)]
            if not targets:
                raise ControlRequestError(f"{escape(path)} is not under a watch")
        else:
            raise ControlRequestError('"path" must be an absolute path')
        missing = [str(watch.root) for watch in targets if watch.root_dev is None]
        scanned = [watch for watch in targets if watch.root_dev is not None]
        full_scans = self._rescans.full_scans
        tickets = {watch.root: full_scans.ticket(watch.root) for watch in scanned}
        before = dataclasses.replace(self._repairer.counts)
        for watch in scanned:
            # Asked for by an operator: a deep look, every sidecar's bytes compared.
            self._rescans.request(watch, deep=True)
        requested = [str(watch.root) for watch in scanned]
        log.info("rescan_requested", roots=requested)
        reply: RescanReply = {
            "scans_requested": requested,
            "roots_missing": missing,
            "paused": self._pause.paused,
            "waited": False,
        }
        if request.get("wait") is not True or self._pause.paused:
            return reply  # paused: the scans run after `stampd resume`
        scans = []
        for root, ticket in tickets.items():
            report = await full_scans.wait(root, ticket)
            if report is not None:
                scans.append(_scan_summary(report))
        await self._repairer.drained()
        reply["waited"] = True
        reply["scans"] = scans
        reply["sidecars"] = _repairs_since(before, self._repairer.counts)
        return reply

    # --- upgrade ------------------------------------------------------------------------------

    async def upgrade(self, request: Mapping[str, Any]) -> UpgradeReply:
        """Make pending ``upgrade`` jobs (all, or those of the files at or under ``paths``)
        due now and wake the runners: reference/opentimestamps.md §4 backs off up to a day
        between tries, and an operator who knows the block is mined need not wait."""
        texts = request.get("paths")
        paths: list[Path] | None = None
        if texts is not None:
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ControlRequestError('"paths" must be a list of absolute paths')
            if len(texts) > MAX_STAMP_PATHS:
                raise ControlRequestError(f'"upgrade" takes at most {MAX_STAMP_PATHS} paths')
            paths = []
            for text in texts:
                path = requested_path(text)
                if isinstance(path, Refusal):
                    raise ControlRequestError(f'"paths": {path.message}')
                paths.append(path)
        due = await self._recorder.call(
            make_upgrades_due, self._recorder.index, now=utc_now(), paths=paths
        )
        running = [
            kind.name
            for kind in kinds.known()
            if JobAction.UPGRADE in kind.actions and self._runners.runner(kind.name) is not None
        ]
        self._runners.wake()
        log.info(
            "upgrade_requested",
            made_due=due.made_due,
            already_due=due.already_due,
            paths=None if paths is None else [escape(path) for path in paths],
        )
        return {
            "made_due": due.made_due,
            "already_due": due.already_due,
            "paths": None if paths is None else [escape(path) for path in paths],
            "running": running,
            "paused": self._pause.paused,
        }

    # --- reload, pause, resume ---------------------------------------------------------------

    async def reload(self, _request: Mapping[str, Any]) -> ReloadReply:
        """Read the configuration again (as SIGHUP does); a refusal is a ``config`` error."""
        return await self._reloader.reload("control")

    async def pause(self, _request: Mapping[str, Any]) -> PauseReply:
        """Hold hashing, scans and stamping; watching goes on."""
        if self._pause.pause(utc_now()):
            self._runners.pause()
            log.info("daemon_paused", hint="`stampd resume` continues; watching goes on")
        return {"paused": True, "since": self._pause.since}

    async def resume(self, _request: Mapping[str, Any]) -> ResumeReply:
        """Let the work held by ``pause`` go on."""
        was = self._pause.since
        if self._pause.resume():
            self._runners.resume()
            log.info("daemon_resumed", paused_since=was)
        return {"paused": False, "was_paused_since": was}


def _iso(seconds: float | None) -> str | None:
    # Every time in --json output is ISO 8601 UTC, in the index's format (the metrics keep
    # Unix seconds, the Prometheus convention).
    return None if seconds is None else format_time(datetime.fromtimestamp(seconds, UTC))


def _scan_summary(report: ScanReport) -> ScanSummary:
    """What ``stampd rescan`` shows of one walk."""
    return {
        "root": escape(report.root),
        "directories": report.directories,
        "files": report.files,
        "candidates": report.candidates,
        "missing": report.missing,
        "errors": report.errors,
        "seconds": round(report.seconds, 3),
        "problem": report.problem,
    }


def _repairs_since(before: RepairCounts, after: RepairCounts) -> RepairSummary:
    return {
        "repaired": after.repaired - before.repaired,
        "written": after.written - before.written,
        "adopted": after.adopted - before.adopted,
        "retired": after.retired - before.retired,
        "problems": after.problems - before.problems,
    }
