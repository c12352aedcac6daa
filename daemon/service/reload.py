"""What a configuration reload changes, decided before anything is touched.

SIGHUP or ``stampd reload`` reads the file again. A new configuration that is invalid, or
that changes a setting the running daemon cannot take over (where its index or its control
socket live), is refused as a whole and the old one stays in force: a half-applied reload
would leave the operator guessing which settings are live. Everything else applies in place:
watches come and go, TSAs change, and queued jobs stay queued, because they live in the index.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from stampd.daemon.config.model import Config, WatchConfig
from stampd.store import kinds

#: [daemon] settings that only a restart can change, with why.
RESTART_ONLY = {
    "state_dir": "the index is open there",
    "control_socket": "the socket is bound there",
    "log_format": "the log stream is set up once",
    "hash_workers": "the hash worker processes start once",
}


@dataclass(frozen=True)
class ConfigDiff:
    """The difference between the running configuration and a newly read one."""

    #: "daemon.KEY: why" for each setting that needs a restart; non-empty means refuse.
    restart_only: tuple[str, ...]
    added: tuple[WatchConfig, ...]
    removed: tuple[Path, ...]
    #: (new watch configuration, the names of the keys that changed)
    changed: tuple[tuple[WatchConfig, tuple[str, ...]], ...]
    #: The evidence kinds' sections (store/kinds.py ``config_section``: ``timestamp``,
    #: ``anchor``) whose settings changed; their strategies are rebuilt from the new ones.
    sections_changed: tuple[str, ...]
    #: [daemon] keys that changed and apply in place.
    daemon_changed: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not (
            self.added
            or self.removed
            or self.changed
            or self.sections_changed
            or self.daemon_changed
        )

    def describe(self) -> list[str]:
        """One line per change, for the log and the ``reload`` reply."""
        lines = [f"watch added: {watch.path}" for watch in self.added]
        lines += [f"watch removed: {path}" for path in self.removed]
        lines += [
            f"watch changed: {watch.path} ({', '.join(keys)})" for watch, keys in self.changed
        ]
        lines += [
            _SECTION_CHANGES.get(name, f"{name}: settings changed")
            for name in self.sections_changed
        ]
        lines += [f"daemon.{key} changed" for key in self.daemon_changed]
        return lines


#: How a changed section reads in the log and the ``reload`` reply, where a generic line
#: would say less.
_SECTION_CHANGES = {
    "timestamp": "timestamp: settings or TSAs changed",
    "anchor": "anchor: calendars or settings changed",
}


def _evidence_sections(config: Config) -> list[str]:
    """The configuration's sections that configure an evidence kind's providers."""
    sections = {kind.config_section for kind in kinds.known() if kind.config_section}
    return sorted(section for section in sections if hasattr(config, section))


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    """What applying ``new`` over the running ``old`` would change."""
    daemon_keys = [field.name for field in dataclasses.fields(old.daemon)]
    moved = [key for key in daemon_keys if getattr(old.daemon, key) != getattr(new.daemon, key)]
    old_watches = {watch.path: watch for watch in old.watches}
    new_watches = {watch.path: watch for watch in new.watches}
    changed = []
    for path, watch in new_watches.items():
        before = old_watches.get(path)
        if before is not None and before != watch:
            keys = tuple(
                field.name
                for field in dataclasses.fields(watch)
                if getattr(before, field.name) != getattr(watch, field.name)
            )
            changed.append((watch, keys))
    return ConfigDiff(
        restart_only=tuple(
            f"daemon.{key}: {RESTART_ONLY[key]}" for key in moved if key in RESTART_ONLY
        ),
        added=tuple(watch for path, watch in new_watches.items() if path not in old_watches),
        removed=tuple(path for path in old_watches if path not in new_watches),
        changed=tuple(changed),
        sections_changed=tuple(
            section
            for section in _evidence_sections(old)
            if getattr(old, section) != getattr(new, section)
        ),
        daemon_changed=tuple(key for key in moved if key not in RESTART_ONLY),
    )
