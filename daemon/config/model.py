"""The configuration file: TOML read into frozen dataclasses (DESIGN §8).

Bad configuration is the one thing that stops the daemon (DESIGN §4 rule 2), so the reader
reports every problem of a file at once, one :class:`ConfigProblem` each, in the same shape: the
key path (``watch[1].quiet``; array indices are 0-based, as in jq), the bad value, and what is
expected::

    watch[1].quiet: "2x" is not a duration (try "2s")

Only what works is accepted (DESIGN §8): evidence kinds and modes that are planned but not
built yet are errors that say "not available yet", not settings that create jobs nobody runs.

Relative paths are relative to the directory of the configuration file; ``~`` is not expanded.
What the settings name on disk (trust roots, secrets) is checked by
:mod:`stampd.daemon.config.check`, which ``stampd config check`` and ``stampd run`` share.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from stampd.daemon.config.durations import format_duration, parse_duration

# The problem types live in their own module and are re-exported: `from config import
# ConfigError` is how the rest of stampd names them (the alias form is mypy's re-export).
from stampd.daemon.config.problems import ConfigError as ConfigError  # noqa: PLC0414
from stampd.daemon.config.problems import ConfigProblem as ConfigProblem  # noqa: PLC0414
from stampd.daemon.config.problems import config_error as config_error  # noqa: PLC0414

#: Where the configuration lives unless ``--config`` or ``$STAMPD_CONFIG`` says otherwise.
DEFAULT_CONFIG_PATH = Path("/etc/stampd/config.toml")
#: The environment variable naming the configuration file.
CONFIG_ENV_VAR = "STAMPD_CONFIG"

#: A secret file named ``$CREDENTIALS_DIRECTORY/NAME`` is a systemd credential (LoadCredential=).
CREDENTIALS_PREFIX = "$CREDENTIALS_DIRECTORY/"

#: Evidence kinds a watch can ask for today (DESIGN §5).
AVAILABLE_EVIDENCE = ("tsr",)
#: Evidence kinds that are designed but not built yet, with what they will be. Naming one is a
#: configuration error: a job for a kind that no runner serves would stay pending forever.
PLANNED_EVIDENCE = {
    "ots": "OpenTimestamps anchors",
    "p7s": "CAdES seals",
    "attest": "attestation service receipts",
}
#: Every evidence kind the configuration knows (``ers`` follows from renewal and batch mode).
EVIDENCE_KINDS = (*AVAILABLE_EVIDENCE, *PLANNED_EVIDENCE)
#: Timestamp modes that are designed but not built yet (see PLANNED_EVIDENCE).
PLANNED_MODES = {"batch": "many files under one TSA token, each with an RFC 4998 evidence record"}

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
SidecarLayout = Literal["adjacent", "mirror"]
Selection = Literal["round-robin", "priority"]
DigestName = Literal["sha256", "sha384", "sha512"]
#: Every mode the format knows; the reader accepts only "per-file" today (see PLANNED_MODES).
TimestampMode = Literal["per-file", "batch"]
TsaAuth = Literal["none", "basic", "bearer"]


@dataclass(frozen=True)
class DaemonSettings:
    """The ``[daemon]`` section: where state lives and how the daemon reports."""

    state_dir: Path
    control_socket: Path
    log_format: LogFormat
    log_level: LogLevel
    #: (host, port) to serve Prometheus metrics on, or None for no metrics endpoint.
    metrics: tuple[str, int] | None
    #: Seconds between full reconciliation scans of every watch (inotify misses some changes).
    rescan: float
    #: Seconds between rescans while some directories have no inotify watch (limit reached).
    fallback_rescan: float
    #: Seconds a component may have work waiting without progress before the daemon counts
    #: as unhealthy and stops the systemd watchdog pings (systemd then restarts it).
    stall_after: float = 60.0


@dataclass(frozen=True)
class WatchConfig:
    """One ``[[watch]]``: a directory tree, which of its files to stamp, and with what."""

    path: Path
    evidence: tuple[str, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    #: Seconds without events after which a file counts as settled.
    quiet: float
    sidecars: SidecarLayout
    #: Seconds after which a file still open for writing is taken anyway (a log kept open).
    max_wait: float


@dataclass(frozen=True)
class TsaConfig:
    """One ``[[timestamp.tsa]]``: an RFC 3161 time-stamping authority."""

    name: str
    url: str
    #: PEM file of the roots the TSA's tokens must chain to; None for the default trust store.
    trust: Path | None
    #: Seconds to leave between two requests to this TSA.
    min_interval: float
    #: TSA policy OID to request (reqPolicy); None lets the TSA use its default.
    policy: str | None = None
    #: HTTP authentication: "none", "basic" (username + secret) or "bearer" (secret).
    auth: TsaAuth = "none"
    username: str | None = None
    #: File holding the password or token; read at start, never logged (DESIGN rule 7).
    secret_file: Path | None = None


@dataclass(frozen=True)
class TimestampConfig:
    """The ``[timestamp]`` section: how RFC 3161 timestamps are requested, and from whom."""

    selection: Selection
    #: Seconds before one request to a TSA is given up.
    timeout: float
    digest: DigestName
    mode: TimestampMode
    tsa: tuple[TsaConfig, ...]
    #: First wait after a round in which every TSA failed; it doubles per failed round.
    retry: float = 30.0
    #: Longest wait between two rounds of one job (the doubling stops here).
    retry_max: float = 21600.0
    #: How long a TSA rests after repeated failures (circuit breaker; doubles, up to 20x).
    cooldown: float = 30.0


@dataclass(frozen=True)
class Config:
    """A whole, valid configuration."""

    #: The absolute path of the file it was read from.
    source: Path
    daemon: DaemonSettings
    watches: tuple[WatchConfig, ...]
    timestamp: TimestampConfig


def config_path_from(option: str | None, environ: Mapping[str, str]) -> Path:
    """The configuration file to use: ``--config``, else ``$STAMPD_CONFIG``, else the default."""
    if option is not None:
        return Path(option)
    from_environment = environ.get(CONFIG_ENV_VAR)
    if from_environment:  # an empty variable counts as unset, as shells treat it
        return Path(from_environment)
    return DEFAULT_CONFIG_PATH


# A configuration is a few kilobytes; the cap turns `--config /dev/zero` into an error, not a hang.
_MAX_CONFIG_BYTES = 1 << 20


def load_config(path: Path) -> Config:
    """Read and validate the configuration file at ``path``.

    Raises :class:`ConfigError` naming the file when it cannot be read, is not TOML (with the
    line and column), or holds invalid settings (all of them).
    """
    return parse_config(read_config_file(path), source=path)


def read_config_file(path: Path) -> Mapping[str, Any]:
    """The TOML data of the file at ``path``, not validated yet.

    Raises :class:`ConfigError` (one problem without a key) when the file is missing,
    unreadable, too large, not UTF-8 or not TOML: then no setting can be checked.
    """

    def unusable(problem: str, hint: str | None = None) -> ConfigError:
        return config_error(path, [ConfigProblem(None, None, problem, hint)])

    try:
        with path.open("rb") as file:
            raw = file.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise unusable(
            "no such configuration file",
            f"create it from config.example.toml, or name another with --config FILE"
            f" or ${CONFIG_ENV_VAR}",
        ) from None
    except OSError as error:
        raise unusable(f"cannot read the configuration: {error.strerror}") from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise unusable("larger than 1 MiB, which is not a stampd configuration")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise unusable(
            f"not UTF-8 text (bad byte at offset {error.start})", "TOML files are UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as error:
        # tomllib's message ends with "(at line L, column C)".
        raise unusable(f"invalid TOML: {error}") from None


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
    problems = _Problems()
    root = _Table(
        data,
        "",
        "the top level",
        problems,
        base_dir=source.absolute().parent,
        environ=os.environ if environ is None else environ,
    )
    root.check_keys(("daemon", "watch", "timestamp"))

    daemon = _daemon_settings(root.table("daemon", "[daemon]"))
    if root.get("watch") in (_MISSING, []):
        problems.add("watch", 'none configured (add a [[watch]] with path = "/srv/records")')
    # Watches without a valid path are left out of the cross-checks (their problem is reported).
    watches: list[tuple[str, WatchConfig]] = []
    for watch_table in root.tables("watch", "[[watch]]"):
        watch = _watch(watch_table)
        if watch is not None:
            watches.append((watch_table.key_path, watch))
    _check_overlaps(problems, daemon, watches)
    timestamp_table = root.table("timestamp", "[timestamp]")
    timestamp, tsa_keys = _timestamp(timestamp_table)
    # A `tsa` of the wrong type is reported already; "tsr needs a TSA" would only repeat it.
    if not timestamp.tsa and timestamp_table.get("tsa") in (_MISSING, []):
        for key, watch in watches:
            if "tsr" in watch.evidence:
                problems.add(
                    f"{key}.evidence",
                    '"tsr" needs a time-stamping authority (add a [[timestamp.tsa]])',
                    value=list(watch.evidence),
                )
    config = Config(
        source=source.absolute(),
        daemon=daemon,
        watches=tuple(watch for _, watch in watches),
        timestamp=timestamp,
    )
    return ParsedSettings(
        config=None if problems else config,
        tsas=tuple(zip(tsa_keys, timestamp.tsa, strict=True)),
        problems=tuple(problems),
    )


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
            "metrics": None if daemon.metrics is None else _format_address(*daemon.metrics),
            "rescan": format_duration(daemon.rescan),
            "fallback_rescan": format_duration(daemon.fallback_rescan),
            "stall_after": format_duration(daemon.stall_after),
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
    }


# --- sections -------------------------------------------------------------------------------

_DAEMON_KEYS = (
    "state_dir",
    "control_socket",
    "log_format",
    "log_level",
    "metrics",
    "rescan",
    "fallback_rescan",
    "stall_after",
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
# Used to point a misplaced key to its table: a key written after `[[timestamp.tsa]]` belongs
# to that TSA in TOML, a classic surprise.
_KEYS_BY_TABLE = {
    "[daemon]": _DAEMON_KEYS,
    "[[watch]]": _WATCH_KEYS,
    "[timestamp]": _TIMESTAMP_KEYS,
    "[[timestamp.tsa]]": _TSA_KEYS,
}
_AVAILABLE_MODES: Final[tuple[Literal["per-file"]]] = ("per-file",)
_TSA_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")


def _daemon_settings(table: _Table) -> DaemonSettings:
    table.check_keys(_DAEMON_KEYS)
    return DaemonSettings(
        state_dir=table.path("state_dir", "/var/lib/stampd"),
        control_socket=table.path("control_socket", "/run/stampd/control.sock"),
        log_format=table.choice("log_format", get_args(LogFormat), "auto"),
        log_level=table.choice("log_level", get_args(LogLevel), "info"),
        metrics=_metrics_address(table),
        rescan=table.duration("rescan", "24h", allow_zero=False),
        fallback_rescan=table.duration("fallback_rescan", "10m", allow_zero=False),
        stall_after=table.duration("stall_after", "60s", allow_zero=False),
    )


def _metrics_address(table: _Table) -> tuple[str, int] | None:
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
        f'{_show(text)} must be HOST:PORT with a port from 1 to 65535 (like "127.0.0.1:9464")',
    )
    return None


def _watch(table: _Table) -> WatchConfig | None:
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


def _evidence(table: _Table) -> tuple[str, ...]:
    # `evidence = []` is an inventory-only watch: versions and digests, no evidence.
    kinds = table.strings("evidence", ("tsr",))
    key = table.key("evidence")
    available = ", ".join(f'"{kind}"' for kind in AVAILABLE_EVIDENCE)
    planned = ", ".join(f'"{kind}"' for kind in PLANNED_EVIDENCE)
    first_seen: dict[str, int] = {}
    for index, kind in enumerate(kinds):
        item = f"{key}[{index}]"
        if kind in first_seen:
            table.problems.add(
                item,
                f"{_show(kind)} is already listed as {key}[{first_seen[kind]}] (list a kind once)",
                value=kind,
            )
            continue
        first_seen[kind] = index
        if kind in PLANNED_EVIDENCE:
            table.problems.add(
                item,
                f"{_show(kind)} is not available yet (planned: {PLANNED_EVIDENCE[kind]});"
                f" available: {available}",
                value=kind,
            )
        elif kind not in AVAILABLE_EVIDENCE:
            table.problems.add(
                item,
                f"{_show(kind)} is not an evidence kind (available: {available};"
                f" planned: {planned})",
                value=kind,
            )
    return tuple(kind for kind in first_seen if kind in AVAILABLE_EVIDENCE)


def _patterns(table: _Table, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    patterns = table.strings(name, default)
    if name == "include" and not patterns:
        table.add(name, '[] matches no file (use ["**"] for every file)')
    for index, pattern in enumerate(patterns):
        if not pattern:
            table.problems.add(
                f"{table.key(name)}[{index}]", '"" must be a non-empty pattern', value=pattern
            )
    return patterns


def _timestamp(table: _Table) -> tuple[TimestampConfig, tuple[str, ...]]:
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
                f"{_show(tsa.name)} is already the name of {first_use[tsa.name]}"
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


def _mode(table: _Table) -> TimestampMode:
    value = table.get("mode")
    if isinstance(value, str) and value in PLANNED_MODES:
        table.add(
            "mode",
            f"{_show(value)} is not available yet (planned: {PLANNED_MODES[value]});"
            ' available: "per-file"',
        )
        return "per-file"
    return table.choice("mode", _AVAILABLE_MODES, "per-file")


def _tsa(table: _Table) -> TsaConfig:
    """One TSA; a name that is missing or invalid comes back empty (and is reported)."""
    table.check_keys(_TSA_KEYS)
    name = table.required_string("name") or ""
    if name and not _TSA_NAME.fullmatch(name):
        expected = 'lowercase letters, digits, "-" and "_", starting with a letter or digit'
        suggestion = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")
        if _TSA_NAME.fullmatch(suggestion):
            expected += f' (try "{suggestion}")'
        table.add("name", f"{_show(name)} must be {expected}")
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
                f"{_show(str(trust))} {problem} (expected a readable PEM file of root"
                " certificates)",
            )
    policy = table.optional_string("policy")
    if policy is not None and not _OID.fullmatch(policy):
        table.add("policy", f'{_show(policy)} is not an OID (like "1.3.6.1.4.1.4146.2.3")')
        policy = None
    auth = table.choice("auth", get_args(TsaAuth), "none")
    username = table.optional_string("username")
    secret_file = table.secret_path("secret_file")
    if auth == "basic" and username is None:
        table.add("auth", '"basic" needs a username (add username = "...")')
    if auth != "none" and table.get("secret_file") is _MISSING:
        table.add("auth", f'"{auth}" needs secret_file, the file holding the secret')
    if secret_file is not None:
        problem = _unreadable_file_problem(secret_file)
        if problem:
            table.add("secret_file", f"{_show(str(secret_file))} {problem}")
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
    shown = _show(_URL_PASSWORD.sub(r"\1***@", url))
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


def _check_overlaps(
    problems: _Problems, daemon: DaemonSettings, watches: Sequence[tuple[str, WatchConfig]]
) -> None:
    """Each directory belongs to at most one watch, and stampd never watches its own state."""
    for (first_key, first), (second_key, second) in itertools.combinations(watches, 2):
        if first.path == second.path:
            problems.add(
                f"{second_key}.path",
                f"{_show(str(second.path))} is also {first_key}.path (watch a directory once)",
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
                f"{_show(str(inner.path))} is inside {outer_key}.path {_show(str(outer.path))}"
                " (watches must not be nested; use exclude to leave a subtree out)",
                value=str(inner.path),
            )
    state_dir = daemon.state_dir
    for key, watch in watches:
        if state_dir == watch.path or watch.path in state_dir.parents:
            problems.add(
                "daemon.state_dir",
                f"{_show(str(state_dir))} is inside {key}.path {_show(str(watch.path))}"
                " (stampd would stamp its own files; keep the state elsewhere)",
                value=str(state_dir),
            )
        elif state_dir in watch.path.parents:
            problems.add(
                f"{key}.path",
                f"{_show(str(watch.path))} is inside daemon.state_dir {_show(str(state_dir))}"
                " (stampd would stamp its own files)",
                value=str(watch.path),
            )


# --- reading tables -------------------------------------------------------------------------


class _Problems(list[ConfigProblem]):
    def add(self, key: str, text: str, hint: str | None = None, *, value: object = None) -> None:
        self.append(ConfigProblem(key, _json_value(value), text, hint))


def _json_value(value: object) -> Any:
    """A value read from TOML as JSON-ready data, for :attr:`ConfigProblem.value`."""
    # A whole table is not "the value" of a problem; TOML has no null.
    if value is _MISSING or value is None or isinstance(value, Mapping):
        return None
    if isinstance(value, list):
        items = [_json_value(item) for item in value]
        return None if any(isinstance(item, Mapping) for item in value) else items
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # TOML has inf and nan; JSON has neither
    return value


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()
_T = TypeVar("_T", bound=str)


class _Table:
    """One TOML table being validated: its values, its key path, and where problems go.

    Getters never raise: they report a problem and return a stand-in value, so that reading
    goes on and every problem of the file is found. Stand-ins never reach a Config, because
    :func:`parse_config` raises when any problem was reported.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        key_path: str,
        title: str,
        problems: _Problems,
        *,
        base_dir: Path,
        environ: Mapping[str, str],
    ) -> None:
        self.data = data
        self.key_path = key_path
        self.title = title
        self.problems = problems
        self.base_dir = base_dir
        self.environ = environ

    def key(self, name: str) -> str:
        return f"{self.key_path}.{name}" if self.key_path else name

    def add(
        self, name: str, text: str, hint: str | None = None, *, value: object = _MISSING
    ) -> None:
        """Report a problem with key ``name``; its value defaults to what the file holds."""
        shown = self.data.get(name) if value is _MISSING else value
        self.problems.add(self.key(name), text, hint, value=shown)

    def get(self, name: str) -> Any:
        value = self.data.get(name)
        # TOML has no null; None arrives only from config_to_dict output and means "unset".
        return _MISSING if value is None else value

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        at_top = not self.key_path
        for name in self.data:
            if name in allowed:
                continue
            is_section = at_top and isinstance(self.data[name], Mapping | list)
            what = "unknown section" if is_section else "unknown key"
            close = difflib.get_close_matches(name, allowed, n=1)
            homes = [
                title
                for title, keys in _KEYS_BY_TABLE.items()
                if name in keys and title != self.title
            ]
            if close:
                what += f' (did you mean "{close[0]}"?)'
            elif homes:
                what += f" (it belongs in {' or '.join(homes)})"
            listing = ", ".join(allowed)
            hint = (
                f"valid sections: {listing}" if at_top else f"valid keys in {self.title}: {listing}"
            )
            # No value: an unknown key may be a secret written in the wrong place.
            self.problems.add(self.key(name), what, hint)

    def table(self, name: str, title: str) -> _Table:
        """The sub-table ``name`` (empty when absent or invalid)."""
        value = self.get(name)
        if value is _MISSING:
            value = {}
        elif isinstance(value, list):
            self.add(name, f"must be a single table (write {title}, not [{title}])")
            value = {}
        elif not isinstance(value, Mapping):
            self.add(name, f"{_show(value)} must be a table ({title})")
            value = {}
        return _Table(
            value,
            self.key(name),
            title,
            self.problems,
            base_dir=self.base_dir,
            environ=self.environ,
        )

    def tables(self, name: str, title: str) -> list[_Table]:
        """The array of tables ``name`` (empty when absent or invalid)."""
        value = self.get(name)
        if value is _MISSING:
            return []
        if isinstance(value, Mapping):
            self.add(name, f"must be an array of tables (write {title}, not {title[1:-1]})")
            return []
        if not isinstance(value, list):
            self.add(name, f"{_show(value)} must be an array of tables ({title})")
            return []
        found = []
        for index, item in enumerate(value):
            key = f"{self.key(name)}[{index}]"
            if isinstance(item, Mapping):
                found.append(
                    _Table(
                        item,
                        key,
                        title,
                        self.problems,
                        base_dir=self.base_dir,
                        environ=self.environ,
                    )
                )
            else:
                self.problems.add(key, f"{_show(item)} must be a table ({title})", value=item)
        return found

    def _string(self, name: str, *, required: bool) -> str | None:
        value = self.get(name)
        if value is _MISSING:
            if required:
                self.add(name, f"is missing (required in every {self.title})")
            return None
        if not isinstance(value, str):
            self.add(name, f"{_show(value)} must be a string")
            return None
        return value

    def required_string(self, name: str) -> str | None:
        return self._string(name, required=True)

    def optional_string(self, name: str) -> str | None:
        return self._string(name, required=False)

    def choice(self, name: str, choices: tuple[_T, ...], default: _T) -> _T:
        value = self._string(name, required=False)
        if value is None:
            return default
        for choice in choices:
            if value == choice:
                return choice
        expected = ", ".join(f'"{choice}"' for choice in choices)
        close = difflib.get_close_matches(value, choices, n=1)
        suggestion = f' (did you mean "{close[0]}"?)' if close else ""
        self.add(name, f"{_show(value)} must be one of {expected}{suggestion}")
        return default

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name)
        if value is _MISSING:
            return default
        if isinstance(value, str):
            self.add(name, f"{_show(value)} must be a list of strings (try {_show([value])})")
            return default
        if not isinstance(value, list):
            self.add(name, f"{_show(value)} must be a list of strings")
            return default
        valid = True
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.problems.add(
                    f"{self.key(name)}[{index}]", f"{_show(item)} must be a string", value=item
                )
                valid = False
        return tuple(value) if valid else default

    def duration(self, name: str, default: str, *, allow_zero: bool) -> float:
        value = self.get(name)
        if value is _MISSING:
            return parse_duration(default)
        if isinstance(value, int | float) and not isinstance(value, bool):
            # Durations are strings so that the unit is always written down (DESIGN §8).
            self.add(name, f'{_show(value)} must be a string with a unit (try "{value}s")')
            return parse_duration(default)
        if not isinstance(value, str):
            self.add(name, f"{_show(value)} must be a string with a unit (like {_show(default)})")
            return parse_duration(default)
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            self.add(name, f"{_show(value)} {error}")
            return parse_duration(default)
        if seconds == 0 and not allow_zero:
            self.add(name, f"{_show(value)} must be more than 0s (like {_show(default)})")
            return parse_duration(default)
        return seconds

    def _resolve(self, name: str, text: str) -> Path | None:
        if not text or "\0" in text:
            self.add(name, f"{_show(text)} must be a path")
            return None
        # Lexically normalised, so that "a/../b" and "b" compare equal in the overlap checks;
        # symlinks are left alone because the paths need not exist yet.
        return Path(os.path.normpath(self.base_dir / text))

    def path(self, name: str, default: str) -> Path:
        text = self._string(name, required=False)
        resolved = None if text is None else self._resolve(name, text)
        return resolved or Path(default)

    def required_path(self, name: str) -> Path | None:
        text = self._string(name, required=True)
        return None if text is None else self._resolve(name, text)

    def optional_path(self, name: str) -> Path | None:
        text = self._string(name, required=False)
        return None if text is None else self._resolve(name, text)

    def secret_path(self, name: str) -> Path | None:
        """A file holding a secret; ``$CREDENTIALS_DIRECTORY/NAME`` names a systemd
        credential (``LoadCredential=``), which only the service's own environment has."""
        text = self._string(name, required=False)
        if text is None or not text.startswith(CREDENTIALS_PREFIX):
            return None if text is None else self._resolve(name, text)
        directory = self.environ.get("CREDENTIALS_DIRECTORY")
        credential = text[len(CREDENTIALS_PREFIX) :]
        if not credential or "/" in credential or credential in (".", ".."):
            self.add(name, f"{_show(text)} must name one credential: $CREDENTIALS_DIRECTORY/NAME")
            return None
        if not directory:
            self.add(
                name,
                f"{_show(text)}: $CREDENTIALS_DIRECTORY is not set",
                "systemd sets it for the stampd service, from LoadCredential= in its unit;"
                " elsewhere, set it or name the file directly",
            )
            return None
        return Path(directory) / credential


def _show(value: object) -> str:
    """``value`` as it would be written in TOML, shortened to keep messages on one line."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, date | time):
        return value.isoformat()
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
