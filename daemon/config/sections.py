"""One parser per table of the configuration file (DESIGN §8): ``[daemon]``, ``[[watch]]``
(and its ``evidence`` list), ``[timestamp]`` and ``[[timestamp.tsa]]``, and the checks of what
they name (URLs, files).

Each parser reads its table through a :class:`~stampd.daemon.config.table.Table`, which reports
every problem with its key path; what spans tables (nested watches, "tsr needs a TSA") is checked
by :mod:`stampd.daemon.config.reader`.

Only what works is accepted (DESIGN §8): an evidence kind is accepted when the registry
(:mod:`stampd.store.kinds`) says it is available; a planned kind or mode is an error that says
"not available yet", not a setting that creates jobs nobody runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final, Literal, get_args
from urllib.parse import urlsplit

from stampd.daemon.config.durations import format_duration
from stampd.daemon.config.locate import daemon_locations
from stampd.daemon.config.model import (
    PLANNED_MODES,
    DaemonSettings,
    DigestName,
    LogFormat,
    LogLevel,
    Selection,
    SidecarLayout,
    TimestampConfig,
    TimestampMode,
    TsaAuth,
    TsaConfig,
    WatchConfig,
    usable_cpus,
)
from stampd.daemon.config.table import MISSING, Table, show
from stampd.store import kinds
from stampd.store.kinds import EvidenceKind

_DAEMON_KEYS = (
    "state_dir",
    "control_socket",
    "log_format",
    "log_level",
    "metrics",
    "rescan",
    "fallback_rescan",
    "stall_after",
    "hash_workers",
)
_WATCH_KEYS = ("path", "evidence", "include", "exclude", "quiet", "sidecars", "max_wait")
_TIMESTAMP_KEYS = (
    "selection",
    "timeout",
    "digest",
    "mode",
    "retry",
    "retry_max",
    "cooldown",
    "tsa",
)
_TSA_KEYS = ("name", "url", "trust", "min_interval", "policy", "auth", "username", "secret_file")
_OID = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")
#: The keys of each table, by its title. Used to point a misplaced key to its table: a key
#: written after `[[timestamp.tsa]]` belongs to that TSA in TOML, a classic surprise.
KEYS_BY_TABLE = {
    "[daemon]": _DAEMON_KEYS,
    "[[watch]]": _WATCH_KEYS,
    "[timestamp]": _TIMESTAMP_KEYS,
    "[[timestamp.tsa]]": _TSA_KEYS,
}
_AVAILABLE_MODES: Final[tuple[Literal["per-file"]]] = ("per-file",)
_TSA_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")


def read_daemon_settings(table: Table) -> DaemonSettings:
    """The ``[daemon]`` section."""
    table.check_keys(_DAEMON_KEYS)
    # The same two paths `stampd status` reads without the rest of the file.
    state_dir, control_socket = daemon_locations(table)
    return DaemonSettings(
        state_dir=state_dir,
        control_socket=control_socket,
        log_format=table.choice("log_format", get_args(LogFormat), "auto"),
        log_level=table.choice("log_level", get_args(LogLevel), "info"),
        metrics=_metrics_address(table),
        rescan=table.duration("rescan", "24h", allow_zero=False),
        fallback_rescan=table.duration("fallback_rescan", "10m", allow_zero=False),
        stall_after=table.duration("stall_after", "60s", allow_zero=False),
        hash_workers=_hash_workers(table),
    )


#: More hash workers than this is a typo rather than a machine (each is a process).
_MOST_HASH_WORKERS = 256


def _hash_workers(table: Table) -> int:
    """``daemon.hash_workers``: a whole number from 1 up; unset, the CPUs this process may
    run on (its affinity mask, as ``nproc`` counts them)."""
    value = table.get("hash_workers")
    if value is MISSING:
        return usable_cpus()
    if isinstance(value, bool) or not isinstance(value, int):
        table.add("hash_workers", f"{show(value)} must be a whole number (like 2)")
        return 1
    if not 1 <= value <= _MOST_HASH_WORKERS:
        table.add(
            "hash_workers",
            f"{value} must be from 1 to {_MOST_HASH_WORKERS}",
            "leave it unset for one worker per CPU; 1 hashes in the scan thread",
        )
        return 1
    return value


def _metrics_address(table: Table) -> tuple[str, int] | None:
    text = table.optional_string("metrics")
    if text is None:
        return None
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):  # [::1]:9464
        host = host[1:-1]
    elif ":" in host:  # an IPv6 address needs brackets, or the port is ambiguous
        host = ""
    if colon and host and port.isascii() and port.isdigit() and 1 <= int(port) <= 65535:
        return host, int(port)
    table.add(
        "metrics",
        f'{show(text)} must be HOST:PORT with a port from 1 to 65535 (like "127.0.0.1:9464")',
    )
    return None


def read_watch(table: Table) -> WatchConfig | None:
    """One watch, or None when its path is missing or invalid (and reported)."""
    table.check_keys(_WATCH_KEYS)
    path = table.required_path("path")
    watch = WatchConfig(
        path=path or Path("/"),
        evidence=_evidence(table),
        include=_patterns(table, "include", ("**",)),
        exclude=_patterns(table, "exclude", ()),
        quiet=table.duration("quiet", "2s", allow_zero=False),
        sidecars=table.choice("sidecars", get_args(SidecarLayout), "adjacent"),
        max_wait=table.duration("max_wait", "1h", allow_zero=False),
    )
    return None if path is None else watch


def _evidence(table: Table) -> tuple[str, ...]:
    # `evidence = []` is an inventory-only watch: versions and digests, no evidence. Omitted,
    # it is the one kind built from the start.
    listed = table.strings("evidence", (EvidenceKind.TSR.value,))
    key = table.key("evidence")
    # Read from the registry at each parse, not at import, so that a kind registered later (a
    # test's own) is accepted like a built-in one. A kind a watch cannot ask for (ers comes from
    # renewal) is not offered.
    watchable = [kind for kind in kinds.known() if kind.watchable]
    available = {kind.name: kind for kind in watchable if kind.available}
    planned = {kind.name: kind for kind in watchable if not kind.available}
    available_list = _quoted(available)
    expected = f"available: {available_list}"
    if planned:
        expected += f"; planned: {_quoted(planned)}"
    first_seen: dict[str, int] = {}
    for index, name in enumerate(listed):
        item = f"{key}[{index}]"
        if name in first_seen:
            table.problems.add(
                item,
                f"{show(name)} is already listed as {key}[{first_seen[name]}] (list a kind once)",
                value=name,
            )
            continue
        first_seen[name] = index
        if name in planned:
            table.problems.add(
                item,
                f"{show(name)} is not available yet (planned: {planned[name].title});"
                f" available: {available_list}",
                value=name,
            )
        elif name not in available:
            table.problems.add(
                item, f"{show(name)} is not an evidence kind ({expected})", value=name
            )
    return tuple(name for name in first_seen if name in available)


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


def _patterns(table: Table, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    patterns = table.strings(name, default)
    if name == "include" and not patterns:
        table.add(name, '[] matches no file (use ["**"] for every file)')
    for index, pattern in enumerate(patterns):
        if not pattern:
            table.problems.add(
                f"{table.key(name)}[{index}]", '"" must be a non-empty pattern', value=pattern
            )
    return patterns


def read_timestamp(table: Table) -> tuple[TimestampConfig, tuple[str, ...]]:
    """The ``[timestamp]`` section, and the key path of each of its TSAs."""
    table.check_keys(_TIMESTAMP_KEYS)
    selection = table.choice("selection", get_args(Selection), "round-robin")
    timeout = table.duration("timeout", "10s", allow_zero=False)
    digest = table.choice("digest", get_args(DigestName), "sha256")
    mode = _mode(table)
    retry = table.duration("retry", "30s", allow_zero=False)
    retry_max = table.duration("retry_max", "6h", allow_zero=False)
    if retry_max < retry:
        table.add(
            "retry_max",
            f"{format_duration(retry_max)} is shorter than retry ({format_duration(retry)})",
        )
    cooldown = table.duration("cooldown", "30s", allow_zero=False)
    tsa_tables = table.tables("tsa", "[[timestamp.tsa]]")
    tsas = [_tsa(tsa_table) for tsa_table in tsa_tables]
    first_use: dict[str, str] = {}
    for tsa_table, tsa in zip(tsa_tables, tsas, strict=True):
        if not tsa.name:
            continue
        if tsa.name in first_use:
            tsa_table.add(
                "name",
                f"{show(tsa.name)} is already the name of {first_use[tsa.name]}"
                " (names must be unique)",
            )
        else:
            first_use[tsa.name] = tsa_table.key_path
    timestamp = TimestampConfig(
        selection=selection,
        timeout=timeout,
        digest=digest,
        mode=mode,
        tsa=tuple(tsas),
        retry=retry,
        retry_max=retry_max,
        cooldown=cooldown,
    )
    return timestamp, tuple(tsa_table.key_path for tsa_table in tsa_tables)


def _mode(table: Table) -> TimestampMode:
    value = table.get("mode")
    if isinstance(value, str) and value in PLANNED_MODES:
        table.add(
            "mode",
            f"{show(value)} is not available yet (planned: {PLANNED_MODES[value]});"
            ' available: "per-file"',
        )
        return "per-file"
    return table.choice("mode", _AVAILABLE_MODES, "per-file")


def _tsa(table: Table) -> TsaConfig:
    """One TSA; a name that is missing or invalid comes back empty (and is reported)."""
    table.check_keys(_TSA_KEYS)
    name = table.required_string("name") or ""
    if name and not _TSA_NAME.fullmatch(name):
        expected = 'lowercase letters, digits, "-" and "_", starting with a letter or digit'
        suggestion = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")
        if _TSA_NAME.fullmatch(suggestion):
            expected += f' (try "{suggestion}")'
        table.add("name", f"{show(name)} must be {expected}")
        name = ""
    url = table.required_string("url") or ""
    if url:
        problem = _url_problem(url)
        if problem:
            table.add("url", problem, value=_URL_PASSWORD.sub(r"\1***@", url))
    trust = table.optional_path("trust")
    if trust is not None:
        problem = _unreadable_file_problem(trust)
        if problem:
            table.add(
                "trust",
                f"{show(str(trust))} {problem} (expected a readable PEM file of root certificates)",
            )
    policy = table.optional_string("policy")
    if policy is not None and not _OID.fullmatch(policy):
        table.add("policy", f'{show(policy)} is not an OID (like "1.3.6.1.4.1.4146.2.3")')
        policy = None
    auth = table.choice("auth", get_args(TsaAuth), "none")
    username = table.optional_string("username")
    secret_file = table.secret_path("secret_file")
    if auth == "basic" and username is None:
        table.add("auth", '"basic" needs a username (add username = "...")')
    if auth != "none" and table.get("secret_file") is MISSING:
        table.add("auth", f'"{auth}" needs secret_file, the file holding the secret')
    if secret_file is not None:
        problem = _unreadable_file_problem(secret_file)
        if problem:
            table.add("secret_file", f"{show(str(secret_file))} {problem}")
    return TsaConfig(
        name=name,
        url=url,
        trust=trust,
        min_interval=table.duration("min_interval", "0s", allow_zero=True),
        policy=policy,
        auth=auth,
        username=username,
        secret_file=secret_file,
    )


def _url_problem(url: str) -> str | None:
    # DESIGN §4 rule 7: a password in a URL must not be echoed into messages and logs.
    shown = show(_URL_PASSWORD.sub(r"\1***@", url))
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError:
        return f"{shown} is not a valid URL"
    if parts.password is not None:
        return f"{shown} must not contain a password (secrets belong in files, not the config)"
    if parts.scheme not in ("http", "https"):
        return f"{shown} must be an http:// or https:// URL"
    if not parts.hostname:
        return f"{shown} has no host (expected http://HOST/...)"
    if any(character.isspace() for character in url):
        return f"{shown} must not contain spaces"
    return None


def _unreadable_file_problem(path: Path) -> str | None:
    if not path.exists():
        return "does not exist"
    if not path.is_file():  # a FIFO would block the open below; a directory cannot be read
        return "is not a regular file"
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    return None


def format_address(host: str, port: int) -> str:
    """``daemon.metrics`` written back as the file has it: ``HOST:PORT``, ``[::1]:PORT``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
