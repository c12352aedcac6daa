"""Reading the configuration file: from a path to a :class:`~stampd.daemon.config.model.Config`.

Bad configuration is the one thing that stops the daemon (DESIGN §4 rule 2), so the reader
reports every problem of a file at once, one :class:`ConfigProblem` each, in the same shape: the
key path (``watch[1].quiet``; array indices are 0-based, as in jq), the bad value, and what is
expected::

    watch[1].quiet: "2x" is not a duration (try "2s")

The file is found (``--config``, ``$STAMPD_CONFIG``, the default) and read as TOML by
:mod:`stampd.daemon.config.locate`; this module hands each table to its parser
(:mod:`stampd.daemon.config.sections`), checks what spans tables (watches that overlap, the
state directory inside a watch, ``tsr`` without a TSA), and writes a configuration back as
data (``stampd config check``).

Relative paths are relative to the directory of the configuration file; ``~`` is not expanded.
What the settings name on disk (trust roots, secrets) is checked by
:mod:`stampd.daemon.config.check`, which ``stampd config check`` and ``stampd run`` share.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stampd.daemon.config.anchor import ANCHOR_KEYS_BY_TABLE, anchor_to_dict, read_anchor
from stampd.daemon.config.durations import format_duration
from stampd.daemon.config.locate import read_config_file
from stampd.daemon.config.model import Config, DaemonSettings, TsaConfig, WatchConfig
from stampd.daemon.config.problems import ConfigProblem, config_error
from stampd.daemon.config.sections import (
    KEYS_BY_TABLE,
    format_address,
    read_daemon_settings,
    read_timestamp,
    read_watch,
)
from stampd.daemon.config.table import MISSING, Problems, Table, show
from stampd.store import kinds
from stampd.store.kinds import EvidenceKind

#: The sections every file may have, before those of the evidence kinds.
_BASE_SECTIONS = ("daemon", "watch")
#: The evidence kinds' sections (their registry ``config_section``) that this reader parses;
#: another kind's section belongs to a kind not built yet and is refused as such.
_PARSED_KIND_SECTIONS = frozenset({"timestamp", "anchor"})


def load_config(path: Path) -> Config:
    """Read and validate the configuration file at ``path``.

    Raises :class:`ConfigError` naming the file when it cannot be read, is not TOML (with the
    line and column), or holds invalid settings (all of them).
    """
    return parse_config(read_config_file(path), source=path)


def parse_config(
    data: Mapping[str, Any], *, source: Path, environ: Mapping[str, str] | None = None
) -> Config:
    """Validate parsed TOML ``data`` read from the file ``source``.

    Relative paths are resolved against ``source``'s directory. The only I/O is checking that
    the ``trust`` and ``secret_file`` files named by TSAs exist and open (what they hold is
    checked by :mod:`stampd.daemon.config.check`). Raises one :class:`ConfigError` listing
    every problem.
    """
    parsed = parse_settings(data, source=source, environ=environ)
    if parsed.config is None:
        raise config_error(source, parsed.problems)
    return parsed.config


@dataclass(frozen=True)
class ParsedSettings:
    """What :func:`parse_settings` made of a file, valid or not."""

    #: The configuration, or None when there are problems.
    config: Config | None
    #: Every TSA that could be read, with its key path (``timestamp.tsa[1]``): even in an
    #: invalid file, so that what its files hold can be checked in the same pass.
    tsas: tuple[tuple[str, TsaConfig], ...]
    problems: tuple[ConfigProblem, ...]


def parse_settings(
    data: Mapping[str, Any], *, source: Path, environ: Mapping[str, str] | None = None
) -> ParsedSettings:
    """Validate parsed TOML ``data`` like :func:`parse_config`, returning the problems."""
    problems = Problems()
    root = Table(
        data,
        "",
        "the top level",
        problems,
        base_dir=source.absolute().parent,
        environ=os.environ if environ is None else environ,
        keys_by_table={**KEYS_BY_TABLE, **ANCHOR_KEYS_BY_TABLE},
    )
    _check_sections(root)

    daemon = read_daemon_settings(root.table("daemon", "[daemon]"))
    if root.get("watch") in (MISSING, []):
        problems.add("watch", 'none configured (add a [[watch]] with path = "/srv/records")')
    # Watches without a valid path are left out of the cross-checks (their problem is reported).
    watches: list[tuple[str, WatchConfig]] = []
    for watch_table in root.tables("watch", "[[watch]]"):
        watch = read_watch(watch_table)
        if watch is not None:
            watches.append((watch_table.key_path, watch))
    _check_overlaps(problems, daemon, watches)
    timestamp_table = root.table("timestamp", "[timestamp]")
    timestamp, tsa_keys = read_timestamp(timestamp_table)
    # A `tsa` of the wrong type is reported already; "tsr needs a TSA" would only repeat it.
    if not timestamp.tsa and timestamp_table.get("tsa") in (MISSING, []):
        for key, watch in watches:
            if EvidenceKind.TSR in watch.evidence:
                problems.add(
                    f"{key}.evidence",
                    f'"{EvidenceKind.TSR}" needs a time-stamping authority'
                    " (add a [[timestamp.tsa]])",
                    value=list(watch.evidence),
                )
    config = Config(
        source=source.absolute(),
        daemon=daemon,
        watches=tuple(watch for _, watch in watches),
        timestamp=timestamp,
        anchor=read_anchor(root.table("anchor", "[anchor]")),
    )
    return ParsedSettings(
        config=None if problems else config,
        tsas=tuple(zip(tsa_keys, timestamp.tsa, strict=True)),
        problems=tuple(problems),
    )


def _check_sections(root: Table) -> None:
    """Unknown sections are errors; a planned kind's section says "not available yet".

    The valid sections are the base ones and the sections of the kinds in the registry
    (:mod:`stampd.store.kinds`) that this reader parses.
    """
    planned: dict[str, str] = {}
    valid = list(_BASE_SECTIONS)
    for kind in kinds.known():
        section = kind.config_section
        if section is None or section in valid or section in planned:
            continue
        if section in _PARSED_KIND_SECTIONS:
            valid.append(section)
        else:
            planned[section] = kind.title
    hint = f"valid sections: {', '.join(valid)}"
    # The planned sections are left out of the unknown-key check, which would call them
    # unknown; each gets its own message instead.
    others = {name: value for name, value in root.data.items() if name not in planned}
    Table(
        others,
        root.key_path,
        root.title,
        root.problems,
        base_dir=root.base_dir,
        environ=root.environ,
        keys_by_table=root.keys_by_table,
    ).check_keys(tuple(valid))
    for name, title in planned.items():
        if name in root.data:
            root.problems.add(name, f"not available yet (planned: {title})", hint)


def config_to_dict(config: Config) -> dict[str, Any]:
    """The effective configuration as JSON-ready data, shaped like the TOML file.

    Paths are absolute strings, durations are formatted back (``"2s"``), metrics is
    ``"host:port"``, and unset optional settings are None. Feeding the result back to
    :func:`parse_config` gives an equal configuration.
    """
    daemon = config.daemon
    timestamp = config.timestamp
    return {
        "daemon": {
            "state_dir": str(daemon.state_dir),
            "control_socket": str(daemon.control_socket),
            "log_format": daemon.log_format,
            "log_level": daemon.log_level,
            "metrics": None if daemon.metrics is None else format_address(*daemon.metrics),
            "rescan": format_duration(daemon.rescan),
            "fallback_rescan": format_duration(daemon.fallback_rescan),
            "stall_after": format_duration(daemon.stall_after),
            "hash_workers": daemon.hash_workers,
        },
        "watch": [
            {
                "path": str(watch.path),
                "evidence": list(watch.evidence),
                "include": list(watch.include),
                "exclude": list(watch.exclude),
                "quiet": format_duration(watch.quiet),
                "sidecars": watch.sidecars,
                "max_wait": format_duration(watch.max_wait),
            }
            for watch in config.watches
        ],
        "timestamp": {
            "selection": timestamp.selection,
            "timeout": format_duration(timestamp.timeout),
            "digest": timestamp.digest,
            "mode": timestamp.mode,
            "retry": format_duration(timestamp.retry),
            "retry_max": format_duration(timestamp.retry_max),
            "cooldown": format_duration(timestamp.cooldown),
            "tsa": [
                {
                    "name": tsa.name,
                    "url": tsa.url,
                    "trust": None if tsa.trust is None else str(tsa.trust),
                    "min_interval": format_duration(tsa.min_interval),
                    "policy": tsa.policy,
                    "auth": tsa.auth,
                    "username": tsa.username,
                    "secret_file": None if tsa.secret_file is None else str(tsa.secret_file),
                }
                for tsa in timestamp.tsa
            ],
        },
        "anchor": anchor_to_dict(config.anchor),
    }


def _check_overlaps(
    problems: Problems, daemon: DaemonSettings, watches: Sequence[tuple[str, WatchConfig]]
) -> None:
    """Each directory belongs to at most one watch, and stampd never watches its own state."""
    for (first_key, first), (second_key, second) in itertools.combinations(watches, 2):
        if first.path == second.path:
            problems.add(
                f"{second_key}.path",
                f"{show(str(second.path))} is also {first_key}.path (watch a directory once)",
                value=str(second.path),
            )
        elif first.path in second.path.parents or second.path in first.path.parents:
            inner_key, inner, outer_key, outer = (
                (second_key, second, first_key, first)
                if first.path in second.path.parents
                else (first_key, first, second_key, second)
            )
            problems.add(
                f"{inner_key}.path",
                f"{show(str(inner.path))} is inside {outer_key}.path {show(str(outer.path))}"
                " (watches must not be nested; use exclude to leave a subtree out)",
                value=str(inner.path),
            )
    state_dir = daemon.state_dir
    for key, watch in watches:
        if state_dir == watch.path or watch.path in state_dir.parents:
            problems.add(
                "daemon.state_dir",
                f"{show(str(state_dir))} is inside {key}.path {show(str(watch.path))}"
                " (stampd would stamp its own files; keep the state elsewhere)",
                value=str(state_dir),
            )
        elif state_dir in watch.path.parents:
            problems.add(
                f"{key}.path",
                f"{show(str(watch.path))} is inside daemon.state_dir {show(str(state_dir))}"
                " (stampd would stamp its own files)",
                value=str(watch.path),
            )
