"""The typed control replies (daemon/service/replies.py) say exactly what a running daemon sends:
every key of every reply, no more and no fewer, so the CLI that reads them through these
types reads what is there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stampd.daemon.service import control
from stampd.daemon.service.replies import (
    PauseReply,
    ReloadReply,
    RepairSummary,
    RescanReply,
    ResumeReply,
    RootStatus,
    ScanSummary,
    StampRefusal,
    StampRefusalError,
    StampReply,
    StampResult,
    StatusReply,
    runner_status,
)
from stampd.store import kinds
from tests.daemon_harness import RunningDaemon


def _ask(daemon: RunningDaemon, **request: Any) -> dict[str, Any]:
    reply: dict[str, Any] = control.request(daemon.tmp / "control.sock", request, timeout=30)
    assert reply.pop("ok") is True, reply
    return reply


def _keys(typed: Any) -> set[str]:
    return set(typed.__required_keys__) | set(typed.__optional_keys__)


def test_every_reply_has_exactly_the_keys_of_its_type(tmp_path: Path) -> None:
    daemon = RunningDaemon(tmp_path, quiet="1h").start()
    try:
        status = _ask(daemon, command="status")
        # Besides its own keys, one per evidence kind the daemon can run (None: not running).
        per_kind = {kind.name for kind in kinds.available()}
        assert set(status) == set(StatusReply.__required_keys__) | per_kind
        assert all(runner_status(status, kind) is None for kind in per_kind)
        (root,) = status["scans"]
        assert set(root) == _keys(RootStatus)

        good = daemon.watched / "good.txt"
        good.write_text("recorded\n")
        stamp = _ask(daemon, command="stamp", paths=[str(good), str(tmp_path / "outside")])
        assert set(stamp) == _keys(StampReply)
        recorded, refused = stamp["results"]
        assert set(recorded) == _keys(StampResult)
        assert set(refused) == _keys(StampRefusal)
        assert set(refused["error"]) <= _keys(StampRefusalError)
        assert refused["error"]["error_class"] == "not_watched"

        asked = _ask(daemon, command="rescan", wait=False)
        assert set(asked) == set(RescanReply.__required_keys__)
        waited = _ask(daemon, command="rescan", wait=True)
        assert set(waited) == _keys(RescanReply)
        (scan,) = waited["scans"]
        assert set(scan) == _keys(ScanSummary)
        assert set(waited["sidecars"]) == _keys(RepairSummary)

        assert set(_ask(daemon, command="reload")) == _keys(ReloadReply)
        assert set(_ask(daemon, command="pause")) == _keys(PauseReply)
        assert set(_ask(daemon, command="resume")) == _keys(ResumeReply)
    finally:
        assert daemon.stop() == 0
