"""The configuration's values: the frozen dataclasses a valid file becomes (DESIGN §8).

What lives here is what the rest of stampd reads: :class:`Config` and its sections, and the
literal types of their settings. How a TOML file becomes a :class:`Config` is
:mod:`stampd.daemon.config.reader` (the file) and :mod:`stampd.daemon.config.sections` (one
parser per table); what is wrong with a file is :mod:`stampd.daemon.config.problems`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

#: Timestamp modes that are designed but not built yet, with what they will be. Naming one is a
#: configuration error ("not available yet"), not a setting that creates jobs nobody runs.
PLANNED_MODES = {"batch": "many files under one TSA token, each with an RFC 4998 evidence record"}

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
SidecarLayout = Literal["adjacent", "mirror"]
Selection = Literal["round-robin", "priority"]
DigestName = Literal["sha256", "sha384", "sha512"]
#: Every mode the format knows; the reader accepts only "per-file" today (see PLANNED_MODES).
TimestampMode = Literal["per-file", "batch"]
TsaAuth = Literal["none", "basic", "bearer"]


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, as ``nproc`` counts them (a
    container or ``taskset`` limit counts, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


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
    #: Worker processes that hash a scan's files (default: the CPUs this process may use);
    #: 1 hashes in the scan thread itself (daemon/watch/hash_workers.py).
    hash_workers: int = field(default_factory=usable_cpus)


@dataclass(frozen=True)
class WatchConfig:
    """One ``[[watch]]``: a directory tree, which of its files to stamp, and with what."""

    path: Path
    #: Names of evidence kinds (:mod:`stampd.store.kinds`), each available; () is inventory only.
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


#: Where ``ots`` proofs are submitted unless ``anchor.calendars`` says otherwise: the public
#: aggregators the reference client uses (reference opentimestamps.md §2, "Public calendars"),
#: as normalised bases (a path ends in "/": the calendar's endpoints are appended to it).
DEFAULT_CALENDARS = (
    "https://a.pool.opentimestamps.org/",
    "https://b.pool.opentimestamps.org/",
    "https://a.pool.eternitywall.com/",
    "https://ots.btc.catallaxy.com/",
)
#: Where pending proofs may be upgraded unless ``anchor.allow`` says otherwise: the calendars
#: the public aggregators write into proofs (the reference client's default whitelist, §2).
DEFAULT_ALLOW = (
    "https://*.calendar.opentimestamps.org/",
    "https://*.calendar.eternitywall.com/",
    "https://*.calendar.catallaxy.com/",
)


@dataclass(frozen=True)
class BitcoinSourceConfig:
    """``[anchor.bitcoin]``: a bitcoind JSON-RPC node that serves block headers (a pruned node
    is fine), to check Bitcoin attestations. Authenticated by exactly one of ``cookie_file``
    or ``username`` + ``secret_file``."""

    #: The node's JSON-RPC URL, normalised (``http://127.0.0.1:8332/``).
    url: str
    #: bitcoind's ``.cookie`` file: bitcoind rewrites it at each start, so it is read at each
    #: use and need not exist while bitcoind is down.
    cookie_file: Path | None = None
    username: str | None = None
    #: File holding the RPC password; read at start, never logged (DESIGN rule 7).
    secret_file: Path | None = None


@dataclass(frozen=True)
class AnchorConfig:
    """The ``[anchor]`` section: OpenTimestamps calendars, quorum, upgrades, header source."""

    #: Calendar (aggregator) bases, normalised, each ending in "/"; never empty.
    calendars: tuple[str, ...] = DEFAULT_CALENDARS
    #: How many calendars must answer a submission (1..len(calendars); reference §3.4).
    min_replies: int = 2
    #: Seconds for one submission to all calendars together (one deadline, reference §3.3).
    timeout: float = 5.0
    #: Seconds before a submission that missed the quorum is tried again, doubling per round
    #: (with jitter) up to ``retry_max``: the same back-off as ``[timestamp]``'s.
    retry: float = 30.0
    retry_max: float = 3600.0
    #: Seconds after stamping before a pending proof is first asked to be upgraded; at least
    #: the calendars' 60 s cache lifetime (reference §4).
    upgrade_after: float = 3600.0
    #: Longest wait between two upgrade tries (the back-off stops growing here; never given up).
    upgrade_max: float = 86400.0
    #: Allow-list patterns, normalised (``daemon/evidence/allowlist.py``): where a pending URI
    #: read from a proof may be asked for its upgrade.
    allow: tuple[str, ...] = DEFAULT_ALLOW
    #: Where block headers come from; None: Bitcoin attestations are reported, not checked.
    bitcoin: BitcoinSourceConfig | None = None

    @property
    def upgrade_patterns(self) -> tuple[str, ...]:
        """Every pattern a pending URI may match to be upgraded: ``allow``, and each configured
        calendar itself (stampd already sends it digests; an own calendar that writes its own
        URL into proofs then needs no ``allow`` entry, unlike ``ots -l``)."""
        return (*self.allow, *(url for url in self.calendars if url not in self.allow))


@dataclass(frozen=True)
class Config:
    """A whole, valid configuration."""

    #: The absolute path of the file it was read from.
    source: Path
    daemon: DaemonSettings
    watches: tuple[WatchConfig, ...]
    timestamp: TimestampConfig
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
