"""OpenTimestamps anchoring: calendar requests per file in a big drop, close → `.ots` latency.

Issue 12 and DESIGN §11: "calendar / TSA requests per file (OTS, batch mode) ≤ 0.01" (per-file
stamping would be 1). The calendars are the ones the tests use (tests/fake_calendar.py: two
otsd-like calendars on loopback in this process, sharing one fake bitcoind); `stampd run` is a
subprocess with `evidence = ["ots"]`, `anchor.min_replies = 2`.

1. Drop: N files of 1 KiB written at once; wall time from the first write until N `ots` proofs
   are recorded (`pending`: the calendars have not "mined") and every `FILE.ots` exists;
   `POST /digest` requests per calendar, and per file (goal ≤ 0.01 per calendar: ≤ 100 for 10k
   files). Reference in the same run: the same drop with `evidence = []` (inventory only:
   settle, hash, record the version), so the difference is what anchoring adds. The CPU
   seconds stampd used in each drop are reported too: on a machine shared with other work
   (2 cores here) they, not the wall time alone, say what anchoring costs.
2. Latency: files written and closed one at a time; close() → `FILE.ots` on disk, p50/p99, as
   a delta over the quiet period. The delta includes the batch window (daemon/evidence/ots.py
   `WINDOW_S`: a lone file waits that long for company before its root is sent) and one
   round to both calendars.

    python bench/bench_ots.py [--files 10000] [--quiet 0.5s] [--latency-samples 60]

Results go to bench/results/ots.json. Exit 1 when the requests-per-file goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stampd_process import start_stampd, stop_stampd  # noqa: E402
from stampd.daemon.evidence.ots import WINDOW_S  # noqa: E402
from tests.fake_bitcoind import FakeBitcoind  # noqa: E402
from tests.fake_calendar import FakeCalendar  # noqa: E402

# STAMPD_BENCH_RESULTS: elsewhere (tests/test_bench_smoke.py runs tiny sizes, whose figures
# must not replace the real ones).
RESULTS = Path(
    os.environ.get("STAMPD_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)
#: Issue 12 / DESIGN §11: calendar requests per file, per calendar.
GOAL_REQUESTS_PER_FILE = 0.01
FILE_SIZE = 1024
DROP_QUIET = "200ms"


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0  # the table is not created yet


def versions(db: Path) -> int:
    return _count(db, "SELECT COUNT(*) FROM versions")


def pending_ots_proofs(db: Path) -> int:
    return _count(db, "SELECT COUNT(*) FROM proofs WHERE kind = 'ots' AND status = 'pending'")


class Daemon:
    """`stampd run` on a fresh tree, anchoring at ``calendars`` (none: inventory only)."""

    def __init__(self, base: Path, calendars: list[str], quiet: str) -> None:
        self.tree = base / "tree"
        self.tree.mkdir()
        self.state = base / "state"
        self.db = self.state / "index.sqlite"
        config = base / "config.toml"
        evidence = '["ots"]' if calendars else "[]"
        text = (
            f'[daemon]\nstate_dir = "{self.state}"\ncontrol_socket = "{base}/control.sock"\n'
            f'log_format = "json"\n[[watch]]\npath = "{self.tree}"\n'
            f'evidence = {evidence}\nquiet = "{quiet}"\n'
        )
        if calendars:
            urls = ", ".join(f'"{url}"' for url in calendars)
            # upgrade_after 1h: no upgrade traffic during the run, only submissions count.
            text += (
                f"[anchor]\ncalendars = [{urls}]\nmin_replies = {len(calendars)}\n"
                'timeout = "5s"\nupgrade_after = "1h"\nupgrade_max = "24h"\nallow = []\n'
            )
        config.write_text(text)
        self.proc = start_stampd(config)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds stampd has used so far (Linux /proc, every thread)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_stampd(self.proc, timeout=120)


def drop_seconds(daemon: Daemon, files: int, done: Callable[[], bool]) -> float:
    """From the first of ``files`` files written at once until ``done()``."""
    payload = os.urandom(FILE_SIZE)
    start = time.perf_counter()
    for number in range(files):
        # Distinct contents (a counter in front), so every file is its own digest.
        (daemon.tree / f"drop-{number:05}.dat").write_bytes(number.to_bytes(8, "big") + payload[8:])
    while not done():
        if daemon.proc.poll() is not None:
            raise RuntimeError("stampd exited early")
        time.sleep(0.05)
    return time.perf_counter() - start


def drop(base: Path, calendars: list[FakeCalendar], files: int) -> dict[str, object]:
    """Section 1: the drop with anchoring, and the same drop inventory only."""
    reference_dir = base / "inventory"
    reference_dir.mkdir()
    daemon = Daemon(reference_dir, [], DROP_QUIET)
    try:
        start_cpu = daemon.cpu_seconds()
        inventory_s = drop_seconds(daemon, files, lambda: versions(daemon.db) >= files)
        inventory_cpu = daemon.cpu_seconds() - start_cpu
    finally:
        daemon.stop()

    ots_dir = base / "ots-drop"
    ots_dir.mkdir()
    before = [calendar.requests["digest"] for calendar in calendars]
    daemon = Daemon(ots_dir, [calendar.url for calendar in calendars], DROP_QUIET)

    def anchored() -> bool:
        # A proof row is committed only after its sidecar is durably written (DESIGN §4.1);
        # the sidecars are still looked at, once, when every row is there.
        if pending_ots_proofs(daemon.db) < files:
            return False
        return all((daemon.tree / f"drop-{number:05}.dat.ots").exists() for number in range(files))

    try:
        start_cpu = daemon.cpu_seconds()
        ots_s = drop_seconds(daemon, files, anchored)
        ots_cpu = daemon.cpu_seconds() - start_cpu
    finally:
        daemon.stop()
    per_calendar = [c.requests["digest"] - b for c, b in zip(calendars, before, strict=True)]
    worst = max(per_calendar) / files
    return {
        "files": files,
        "file_bytes": FILE_SIZE,
        "quiet_ms": 200,
        "calendars": len(calendars),
        "min_replies": len(calendars),
        "inventory_only_s": inventory_s,
        "inventory_only_files_per_s": files / inventory_s,
        "inventory_only_cpu_s": inventory_cpu,
        "ots_s": ots_s,
        "ots_files_per_s": files / ots_s,
        "ots_cpu_s": ots_cpu,
        "anchoring_adds_s": ots_s - inventory_s,
        "digest_requests_per_calendar": per_calendar,
        "requests_per_file_per_calendar": worst,
        "goal_requests_per_file": GOAL_REQUESTS_PER_FILE,
        "pass": worst <= GOAL_REQUESTS_PER_FILE,
    }


def latencies(base: Path, calendars: list[FakeCalendar], quiet: str, samples: int) -> list[float]:
    """Section 2: close() → `FILE.ots` for files written one at a time."""
    run_dir = base / "latency"
    run_dir.mkdir()
    daemon = Daemon(run_dir, [calendar.url for calendar in calendars], quiet)
    try:
        fresh = daemon.tree / "fresh"
        fresh.mkdir()
        time.sleep(1.0)
        measured = []
        for number in range(samples):
            path = fresh / f"new-{number}.dat"
            with path.open("wb") as handle:
                handle.write(os.urandom(FILE_SIZE))
            closed = time.perf_counter()
            sidecar = path.with_name(path.name + ".ots")
            while not sidecar.exists():
                if daemon.proc.poll() is not None:
                    raise RuntimeError("stampd exited early")
                time.sleep(0.002)
            measured.append(time.perf_counter() - closed)
    finally:
        daemon.stop()
    return sorted(measured)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--quiet", default="0.5s")
    parser.add_argument("--latency-samples", type=int, default=60)
    args = parser.parse_args()
    quiet_ms = float(args.quiet.removesuffix("s")) * 1000
    with (
        tempfile.TemporaryDirectory(prefix="stampd-bench-ots-") as tmp,
        FakeBitcoind() as bitcoind,
        FakeCalendar(bitcoind) as first,
        FakeCalendar(bitcoind) as second,
    ):
        base = Path(tmp)
        calendars = [first, second]
        section = drop(base, calendars, args.files)
        measured = latencies(base, calendars, args.quiet, args.latency_samples)
    p50 = statistics.median(measured) * 1000
    p99 = measured[min(len(measured) - 1, int(len(measured) * 0.99))] * 1000

    files = args.files
    ratio = float(section["requests_per_file_per_calendar"])  # type: ignore[arg-type]
    print(
        f"\n{files:,} files of 1 KiB dropped at once, quiet 200 ms,"
        f" 2 fake calendars, min_replies = 2"
    )
    print(
        f"  inventory only (evidence = [])   {section['inventory_only_s']:>7.2f} s"
        f"   {section['inventory_only_files_per_s']:>7.0f} files/s"
        f"   stampd CPU {section['inventory_only_cpu_s']:.1f} s"
    )
    print(
        f'  evidence = ["ots"], all pending  {section["ots_s"]:>7.2f} s'
        f"   {section['ots_files_per_s']:>7.0f} files/s"
        f"   stampd CPU {section['ots_cpu_s']:.1f} s"
        f"   (anchoring adds {section['anchoring_adds_s']:.2f} s)"
    )
    print(
        f"  POST /digest per calendar {section['digest_requests_per_calendar']}:"
        f" {ratio:.4f} per file (goal ≤ {GOAL_REQUESTS_PER_FILE}, per-file stamping = 1)"
        f"  {'PASS' if section['pass'] else 'FAIL'}"
    )
    print(
        f"close → FILE.ots (quiet {quiet_ms:.0f} ms, batch window {WINDOW_S * 1000:.0f} ms"
        f" included, {args.latency_samples} files):"
        f" p50 {p50:.0f} ms (+{p50 - quiet_ms:.0f}), p99 {p99:.0f} ms (+{p99 - quiet_ms:.0f})"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ots.json").write_text(
        json.dumps(
            {
                "drop": section,
                "latency": {
                    "quiet_ms": quiet_ms,
                    "batch_window_ms": WINDOW_S * 1000,
                    "samples": args.latency_samples,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "p50_over_quiet_ms": p50 - quiet_ms,
                    "p99_over_quiet_ms": p99 - quiet_ms,
                },
            },
            indent=2,
        )
    )
    return 0 if section["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
