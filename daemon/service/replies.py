"""The control socket's replies, typed once for the daemon that writes them and the CLI that
reads them (DESIGN §8: one JSON request and one JSON reply per line).

TypedDicts rather than dataclasses: the wire format *is* a JSON object with these keys, so a
TypedDict types the daemon's reply and the CLI's reading of it with no conversion code, and
``--json`` output (which passes replies on) stays exactly what the daemon sent. mypy checks
that the daemon fills every key with the right type; the CLI trusts the daemon's reply as
it always did (:func:`typing.cast`), reading it through these names instead of
``dict[str, Any]``. Keys are never renamed (scripts read them); new ones may be added.

Every reply also carries ``"ok": true`` (added by :mod:`stampd.daemon.service.control`), and an
error reply is ``{"ok": false, "error": ControlError}``.

This module is imported by the CLI at start: it imports nothing but :mod:`typing`. It does
without ``from __future__ import annotations``: Python 3.11 counts a ``NotRequired`` key given
as a string among ``__required_keys__`` (tests/service/test_replies.py reads them).
"""

from collections.abc import Mapping
from typing import Literal, NotRequired, TypedDict, cast


class ConfigProblemEntry(TypedDict):
    """One problem of a refused configuration, as ``stampd config check --json`` lists it."""

    key: str | None
    value: object
    problem: str
    hint: str | None


class ControlError(TypedDict):
    """Why a request failed: a :class:`~stampd.store.errors.StampdError` as a mapping."""

    error_class: str
    message: str
    hint: NotRequired[str | None]
    #: For ``error_class = "config"``: every problem found.
    problems: NotRequired[list[ConfigProblemEntry]]


# --- status ------------------------------------------------------------------------------------


class RootStatus(TypedDict):
    """One watch root as the running daemon sees it (``status``'s ``scans``)."""

    root: str
    watched: bool
    ok: bool
    problem: str | None
    hint: str | None
    directories: int
    last_full_scan_at: str | None
    last_full_scan_seconds: float | None


class StatusReply(TypedDict):
    """``status``: the daemon's live state, the same figures the metrics export.

    The reply also holds one key per evidence kind the daemon runs, named after the kind
    (``"tsr"``), whose value is that kind's :class:`RunnerStatus` or None while its runner is
    stopped; :func:`runner_status` reads it.
    """

    pid: int
    version: str
    started_at: str
    config: str
    reloads: int
    healthy: bool
    problems: list[str]
    paused_since: str | None
    watches: list[str]
    settling: int
    hashing: int
    recording: int
    scanning: str | None
    scan_files: int | None
    scans_done: int
    subtree_scans_done: int
    scans_pending: int
    watchdog_pinged: bool
    scans: list[RootStatus]
    inotify_watches: int | None
    unwatched_dirs: int
    inotify_overflows: int
    metrics: str | None


class ProviderStatus(TypedDict):
    """One provider of a runner's pool: its circuit breaker and counters since start."""

    name: str
    breaker: str
    resting_s: float
    attempts: int
    failures: int
    consecutive_failures: int
    last_error_class: str | None
    last_success_at: str | None


class RunnerStatus(TypedDict):
    """One evidence kind's job runner (``status["tsr"]``)."""

    in_flight: int
    completed: int
    failed_rounds: int
    providers: list[ProviderStatus]


def runner_status(status: StatusReply, kind: str) -> RunnerStatus | None:
    """The status of ``kind``'s runner in a ``status`` reply; None when it does not run."""
    # A TypedDict is a Mapping[str, object]; the per-kind keys are not among its fields.
    reply: Mapping[str, object] = status
    entry = reply.get(kind)
    return cast(RunnerStatus, entry) if isinstance(entry, dict) else None


# --- stamp -------------------------------------------------------------------------------------


class StampResult(TypedDict):
    """A path ``stamp`` recorded."""

    path: str
    recorded: Literal[True]
    #: ``new_file``, ``new_version``, ``unchanged`` or ``renamed`` (the index's outcome).
    outcome: str
    version_id: int
    size: int
    sha256: str
    #: The evidence kinds queued for the new version (empty when nothing new was recorded).
    queued: list[str]


class StampRefusalError(TypedDict):
    """Why ``stamp`` did not record a path (an :class:`~stampd.store.errors.ErrorClass`)."""

    error_class: str
    message: str
    hint: NotRequired[str]


class StampRefusal(TypedDict):
    """A path ``stamp`` did not record; the other paths of the request go on."""

    path: str
    recorded: Literal[False]
    error: StampRefusalError


class StampReply(TypedDict):
    """``stamp``: one result per requested path, in order."""

    results: list[StampResult | StampRefusal]


# --- rescan ------------------------------------------------------------------------------------


class ScanSummary(TypedDict):
    """What ``stampd rescan`` shows of one walk."""

    root: str
    directories: int
    files: int
    candidates: int
    missing: int
    errors: int
    seconds: float
    problem: str | None


class RepairSummary(TypedDict):
    """What the repairs the walks asked for did (counts since the request)."""

    repaired: int
    written: int
    adopted: int
    retired: int
    problems: int


class RescanReply(TypedDict):
    """``rescan``: the scans asked for; with ``wait`` (and not paused), what they found."""

    scans_requested: list[str]
    roots_missing: list[str]
    paused: bool
    waited: bool
    scans: NotRequired[list[ScanSummary]]
    sidecars: NotRequired[RepairSummary]


# --- upgrade -----------------------------------------------------------------------------------


class UpgradeReply(TypedDict):
    """``upgrade``: pending ``upgrade`` jobs (all, or those of the paths) made due now."""

    #: Jobs whose next try was later and is now.
    made_due: int
    #: Jobs that were due already.
    already_due: int
    #: The paths asked about (escaped, absolute); None for every pending upgrade.
    paths: list[str] | None
    #: The kinds with upgrade jobs whose runner runs (woken now); a kind not listed keeps
    #: its due jobs until it is configured.
    running: list[str]
    paused: bool


# --- reload, pause, resume ---------------------------------------------------------------------


class ReloadReply(TypedDict):
    """``reload``: the configuration file read, and one line per change applied."""

    config: str
    changes: list[str]


class PauseReply(TypedDict):
    """``pause``: paused now, since when (the first ``pause``'s time)."""

    paused: Literal[True]
    since: str | None


class ResumeReply(TypedDict):
    """``resume``: running again; when the pause began (None: it was not paused)."""

    paused: Literal[False]
    was_paused_since: str | None
