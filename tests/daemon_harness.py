"""Runs `stampd run` as a subprocess on a temporary tree with real inotify, for system tests."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

STAMPD = str(Path(sys.executable).with_name("stampd"))


class RunningDaemon:
    """A `stampd run` process with its JSON log collected in the background."""

    def __init__(
        self,
        tmp: Path,
        *,
        quiet: str = "0.3s",
        prefix: Sequence[str] = (),
        extra: str = "",
        daemon_extra: str = "",
        evidence: str = "[]",
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.watched = tmp / "watched"
        self.watched.mkdir(exist_ok=True)
        self.state = tmp / "state"
        self.config = tmp / "config.toml"
        self.config.write_text(
            "[daemon]\n"
            f'state_dir = "{self.state}"\n'
            f'control_socket = "{tmp / "control.sock"}"\n'
            'log_format = "json"\n'
            'log_level = "debug"\n' + daemon_extra + "[[watch]]\n"
            f'path = "{self.watched}"\n'
            f"evidence = {evidence}\n"
            f'quiet = "{quiet}"\n' + extra
        )
        self.prefix = list(prefix)
        self.env = dict(env or {})
        self.events: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> RunningDaemon:
        self.proc = subprocess.Popen(
            [*self.prefix, STAMPD, "--config", str(self.config), "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_event("daemon_ready")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except json.JSONDecodeError:
                self.events.append({"event": "raw", "line": line})

    def wait_event(self, name: str, *, count: int = 1, timeout: float = 30) -> None:
        wait_for(lambda: self.count(name) >= count, timeout, f"{count} x {name}", self)

    def count(self, name: str) -> int:
        return sum(1 for event in list(self.events) if event.get("event") == name)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        return code

    def cli(
        self,
        *args: str,
        timeout: float = 60,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``stampd --config CONFIG ARGS…`` against this daemon, as an operator would."""
        return subprocess.run(
            [STAMPD, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def versions(self) -> dict[str, list[str]]:
        """path → sha256 of each recorded version, oldest first (read-only, like the CLI)."""
        db = self.state / "index.sqlite"
        if not db.exists():
            return {}
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            rows = conn.execute(
                "SELECT f.path, v.sha256 FROM versions v JOIN files f ON f.id = v.file_id"
                " ORDER BY v.id"
            ).fetchall()
        finally:
            conn.close()
        result: dict[str, list[str]] = {}
        for path, sha256 in rows:
            result.setdefault(path, []).append(sha256)
        return result

    def files(self) -> dict[str, str]:
        """path → state of every file row."""
        conn = sqlite3.connect(f"{(self.state / 'index.sqlite').as_uri()}?mode=ro", uri=True)
        try:
            return dict(conn.execute("SELECT path, state FROM files").fetchall())
        finally:
            conn.close()

    def settle_until(self, expected: dict[Path, bytes], *, timeout: float = 30) -> None:
        """Wait until every expected file has its digest recorded, then a little longer so
        that a late duplicate would show, and check there is exactly one version each."""
        want = {str(path): hashlib.sha256(data).hexdigest() for path, data in expected.items()}

        def done() -> bool:
            versions = self.versions()
            return all(sha in versions.get(path, []) for path, sha in want.items())

        def missing() -> str:
            versions = self.versions()
            absent = sorted(p for p, sha in want.items() if sha not in versions.get(p, []))
            return f"versions for {len(absent)} of {len(want)} files, e.g. {absent[:3]}"

        wait_for(done, timeout, "versions", self, describe=missing)
        time.sleep(1.0)


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    daemon: RunningDaemon | None = None,
    *,
    describe: Callable[[], str] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    if describe is not None:
        what = describe()
    detail = ""
    if daemon is not None:
        recorded = sum(map(len, daemon.versions().values()))
        tail = [e for e in daemon.events if e.get("logger", "").startswith("stampd")][-12:]
        detail = f"\n{recorded} versions recorded\nlog tail: {tail}"
    raise AssertionError(f"timed out waiting for {what}{detail}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
