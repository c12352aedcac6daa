"""Applying a reloaded configuration to the running components (SIGHUP, ``stampd reload``).

What a reload may change is decided first (:mod:`stampd.daemon.service.reload`), and
everything that can fail — the full ``config check``, every TSA's trust and secret files, the
new metrics address — is built before anything changes. A refused reload leaves the old
configuration in force, whole; an accepted one applies in place: watches come and go, TSAs
change, queued jobs stay queued (they live in the index).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from stampd.daemon.config.check import check_config
from stampd.daemon.config.model import Config, DaemonSettings
from stampd.daemon.config.problems import ConfigError
from stampd.daemon.evidence.runners import EvidenceRunners, RunnerSetup
from stampd.daemon.service.logs import get_logger
from stampd.daemon.service.metrics_endpoint import MetricsEndpoint
from stampd.daemon.service.notify import Notifier
from stampd.daemon.service.reload import diff_configs
from stampd.daemon.service.replies import ReloadReply
from stampd.daemon.watch.recorder import Recorder
from stampd.daemon.watch.rescans import Rescans
from stampd.daemon.watch.root_watch import RootWatch
from stampd.daemon.watch.runtime import Watches, WatchRuntime

# The events were the daemon's before reloading had a module of its own: one logger name.
log = get_logger("stampd.daemon")

#: A component that follows the ``[daemon]`` settings in force (stall_after, rescan…).
SettingsFollower = Callable[[DaemonSettings], None]


class Reloader:
    """Holds the configuration in force; reads the file again and applies it, one at a time."""

    def __init__(
        self,
        *,
        config: Config,
        notifier: Notifier,
        status_line: Callable[[], str],
        recorder: Recorder,
        watches: Watches,
        root_watch: RootWatch,
        rescans: Rescans,
        runners: EvidenceRunners,
        components: MutableMapping[str, asyncio.Task[Any]],
        metrics: MetricsEndpoint,
        followers: Sequence[SettingsFollower],
    ) -> None:
        self._config = config
        self._notifier = notifier
        self._status_line = status_line
        self._recorder = recorder
        self._watches = watches
        self._root_watch = root_watch
        self._rescans = rescans
        self._runners = runners
        self._components = components
        self._metrics = metrics
        self._followers = tuple(followers)
        self._lock = asyncio.Lock()
        self._reloads = 0

    @property
    def config(self) -> Config:
        """The configuration in force."""
        return self._config

    @property
    def reloads(self) -> int:
        """Reloads applied since start (refused ones do not count)."""
        return self._reloads

    def apply_runners(self, setup: RunnerSetup) -> None:
        """Start, reconfigure or stop the evidence runners to match a configuration (at start,
        and on each reload); their tasks join the components the health check watches."""
        # Whatever runner exists when jobs are committed is woken, never one replaced since.
        self._recorder.on_jobs = self._runners.wake
        layouts = {watch.watch_id: watch.config.sidecars for watch in self._watches}
        # Every runner task of before leaves the health check's components; those still
        # running (reconfigured, not replaced) come back with the new ones.
        for name in self._runners.tasks():
            self._components.pop(name, None)
        self._runners.apply(setup, layouts)
        self._components.update(self._runners.tasks())

    async def reload(self, trigger: str) -> ReloadReply:
        """Read the configuration file again and apply it, or refuse it and keep the old one.

        Raises :class:`ConfigError` (the reason) when the new configuration is refused.
        """
        async with self._lock:
            self._notifier.reloading()
            try:
                return await self._reload(trigger)
            finally:
                self._notifier.ready(self._status_line())

    async def _reload(self, trigger: str) -> ReloadReply:
        old = self._config
        source = old.source
        runners: RunnerSetup | None = None
        try:
            # The same full check as `stampd config check` and the start (every TSA's trust
            # and secret files), so a reload refuses exactly what a restart would.
            new = (await asyncio.to_thread(check_config, source)).config
            diff = diff_configs(old, new)
            if diff.restart_only:
                raise ConfigError(
                    f"{source}: {'; '.join(diff.restart_only)}",
                    hint="these take effect only at a restart (systemctl restart stampd);"
                    " put the old values back to reload the rest",
                )
            runners = self._runners.prepare(new)
            rebind = "metrics" in diff.daemon_changed
            metrics_server = self._metrics.prepare(new, old) if rebind else None
        except ConfigError as error:
            if runners is not None:
                self._runners.discard(runners)
            log.error("reload_refused", trigger=trigger, reason=str(error), config=str(source))
            raise
        changes = diff.describe()
        for path in diff.removed:
            await self._root_watch.remove(path)
        for configured in diff.added:
            index = self._recorder.index
            watch_id = await self._recorder.call(index.ensure_watch, configured.path)
            self._root_watch.add(WatchRuntime.of(configured, watch_id))
        for configured, keys in diff.changed:
            watch = self._watches.at(configured.path)
            assert watch is not None  # diff_configs found it in the configuration in force
            watch.reconfigure(configured)
            if {"include", "exclude"} & set(keys) and watch.root_dev is not None:
                self._rescans.request(watch)  # files newly included are found by a walk
        self._config = new
        self.apply_runners(runners)
        if rebind:
            self._metrics.replace(metrics_server)
        for follow in self._followers:
            follow(new.daemon)
        if "log_level" in diff.daemon_changed:
            logging.getLogger().setLevel(new.daemon.log_level.upper())
        self._reloads += 1
        log.info("config_reloaded", trigger=trigger, config=str(source), changes=changes)
        return {"config": str(source), "changes": changes}
