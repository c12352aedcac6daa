"""First scan, readiness, close-to-version latency and peak RSS of `stampd run` (DESIGN §11).

1. Builds a tree of 100k files of 4 KiB (100 per directory).
2. Reference: `find TREE -type f -print0 | xargs -0 sha256sum > /dev/null`, files/s.
3. stampd: `stampd run` on the tree with an empty state directory; time to `daemon_ready`
   (must not depend on the tree's size) and until every file has a version in the index
   (hashed with SHA-256 and SHA-512 and committed; an inventory watch, `evidence = []`, so
   no jobs: only what works is configurable, and a TSA would add network to a scan figure);
   files/s and the ratio.
4. Close-to-version latency: with the scan done, 100 files written and closed one at a time;
   the time from close() until the version is in the index, p50/p99, next to `quiet`.
5. Peak RSS (VmHWM) of the daemon.
6. The cost follows the change: the daemon's CPU time (user + system, /proc/PID/stat) for
   100 new directories with one file each, made in a burst, until all 100 files are recorded
   and the daemon is idle again (no scan running or pending, queues empty: the walks the
   directories caused are counted too); next to the CPU time of one full rescan of the same
   tree (`stampd rescan`) until idle, and of the idle daemon over as long as the directories
   took (its ticks and root checks).

    python bench/bench_scan.py [--files 100000] [--quiet 0.5s]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from stampd.daemon.service import control

# STAMPD_BENCH_RESULTS: elsewhere (tests/test_bench_smoke.py runs tiny sizes, whose figures
# must not replace the real ones).
RESULTS = Path(
    os.environ.get("STAMPD_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)
STAMPD = str(Path(sys.executable).with_name("stampd"))


def build_tree(root: Path, files: int) -> None:
    block = os.urandom(4096)
    for number in range(files):
        directory = root / f"d{number // 100:05}"
        if number % 100 == 0:
            directory.mkdir(parents=True)
        # Distinct contents: the first 8 bytes carry the file number.
        (directory / f"f{number:06}.dat").write_bytes(number.to_bytes(8, "big") + block[8:])


def reference_files_per_s(root: Path, files: int) -> float:
    subprocess.run(["sync"], check=False)
    start = time.perf_counter()
    subprocess.run(
        f"find {root} -type f -print0 | xargs -0 sha256sum > /dev/null", shell=True, check=True
    )
    return files / (time.perf_counter() - start)


def count_versions(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def has_version(db: Path, path: Path) -> bool:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(
            "SELECT 1 FROM files WHERE path = ? AND current_version_id IS NOT NULL", (str(path),)
        ).fetchone()
        return row is not None
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far, every thread included (proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command name: state is field 3, utime field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ScanLog:
    """Drains the daemon's JSON log (it must never block on a full pipe) and counts the
    full scans it reports (``scan_finished`` without a ``subtree``)."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.full_scans = 0
        self._lines = lines
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._lines:
            if '"scan_finished"' in line and json.loads(line).get("subtree") is None:
                self.full_scans += 1


def wait_idle(control_socket: Path) -> None:
    """Until the daemon has no scan running or pending and nothing queued, twice in a row
    (asked over the control socket: a CLI process per poll would compete for the CPU)."""
    calm = 0
    while calm < 2:
        time.sleep(0.1)
        state = control.request(control_socket, {"command": "status"})
        busy = (
            state.get("scanning")
            or state.get("scans_pending")
            or state.get("settling")
            or state.get("hashing")
            or state.get("recording")
        )
        calm = 0 if busy else calm + 1


def new_directories_cpu(
    proc: subprocess.Popen[str], db: Path, tree: Path, count: int, control_socket: Path
) -> float:
    """Daemon CPU seconds for ``count`` new directories with a file each, until recorded and
    idle."""
    before = cpu_seconds(proc.pid)
    paths = []
    for number in range(count):
        directory = tree / f"new-dir-{number:03}"
        directory.mkdir()
        path = directory / "file.dat"
        path.write_bytes(os.urandom(4096))
        paths.append(path)
    for path in paths:
        while not has_version(db, path):
            time.sleep(0.01)
    wait_idle(control_socket)
    return cpu_seconds(proc.pid) - before


def full_rescan_cpu(
    proc: subprocess.Popen[str], config: Path, scans: ScanLog, control_socket: Path
) -> float:
    """Daemon CPU seconds for one `stampd rescan` of the whole tree, until it finished and
    the daemon is idle."""
    done = scans.full_scans
    before = cpu_seconds(proc.pid)
    subprocess.run([STAMPD, "--config", str(config), "rescan"], check=True, capture_output=True)
    while scans.full_scans == done:
        time.sleep(0.01)
    wait_idle(control_socket)
    return cpu_seconds(proc.pid) - before


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--quiet", default="0.5s")
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--new-directories", type=int, default=100)
    args = parser.parse_args()
    quiet_s = float(args.quiet.removesuffix("s"))

    with tempfile.TemporaryDirectory(prefix="stampd-bench-scan-") as tmp:
        base = Path(tmp)
        tree = base / "tree"
        print(f"building {args.files:,} files of 4 KiB ...", flush=True)
        build_tree(tree, args.files)
        reference = reference_files_per_s(tree, args.files)

        state = base / "state"
        config = base / "config.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{state}"\ncontrol_socket = "{base}/control.sock"\n'
            f'log_format = "json"\n[[watch]]\npath = "{tree}"\nevidence = []\n'
            f'quiet = "{args.quiet}"\n'
        )
        db = state / "index.sqlite"
        start = time.perf_counter()
        proc = subprocess.Popen(
            [STAMPD, "--config", str(config), "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"daemon_ready"' in line:
                break
        ready_s = time.perf_counter() - start
        scans = ScanLog(proc.stdout)
        while count_versions(db) < args.files:
            time.sleep(0.05)
            if proc.poll() is not None:
                print("stampd exited early", file=sys.stderr)
                return 1
        scan_s = time.perf_counter() - start
        ours = args.files / scan_s

        latencies = []
        fresh = tree / "fresh"
        fresh.mkdir()
        time.sleep(1.0)
        for number in range(args.latency_samples):
            path = fresh / f"new-{number}.dat"
            with path.open("wb") as handle:
                handle.write(os.urandom(4096))
            closed = time.perf_counter()
            while not has_version(db, path):
                time.sleep(0.002)
            latencies.append(time.perf_counter() - closed)

        time.sleep(2.0)  # let the last samples' work finish before counting CPU
        started = time.perf_counter()
        control_socket = base / "control.sock"
        mkdir_cpu = new_directories_cpu(proc, db, tree, args.new_directories, control_socket)
        mkdir_wall = time.perf_counter() - started
        idle_before = cpu_seconds(proc.pid)
        time.sleep(mkdir_wall)
        idle_cpu = cpu_seconds(proc.pid) - idle_before
        rescan_cpu = full_rescan_cpu(proc, config, scans, control_socket)
        rss = peak_rss_mib(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    ratio = ours / reference
    rows = [
        (
            "first scan, files/s (hashed + indexed)",
            f"{ours:,.0f}",
            f"find|xargs sha256sum {reference:,.0f}/s",
            f"{ratio:.2f}x",
            "≥ 1.0x",
        ),
        ("start → daemon_ready", f"{ready_s * 1000:.0f} ms", "", "", "< 1 s"),
        (
            "close → version p50",
            f"{p50 * 1000:.0f} ms",
            f"quiet {quiet_s * 1000:.0f} ms",
            f"+{(p50 - quiet_s) * 1000:.0f} ms",
            "≤ quiet + 150 ms",
        ),
        (
            "close → version p99",
            f"{p99 * 1000:.0f} ms",
            f"quiet {quiet_s * 1000:.0f} ms",
            f"+{(p99 - quiet_s) * 1000:.0f} ms",
            "≤ quiet + 1 s",
        ),
        ("peak RSS (VmHWM)", f"{rss:.0f} MiB", "", "", "< 200 MB"),
        (
            f"{args.new_directories} mkdir+file, daemon CPU",
            f"{mkdir_cpu * 1000:.0f} ms",
            f"one full rescan {rescan_cpu * 1000:.0f} ms",
            f"{mkdir_cpu / rescan_cpu:.3f}x",
            "≪ 1x",
        ),
        (
            "  idle daemon CPU, as long",
            f"{idle_cpu * 1000:.0f} ms",
            f"over {mkdir_wall:.1f} s",
            "",
            "",
        ),
    ]
    print(f"\n{args.files:,} files of 4 KiB")
    for row in rows:
        target = f"  target {row[4]}" if row[4] else ""
        print(f"{row[0]:<40} {row[1]:>12}  {row[2]:<32} {row[3]:>9}{target}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scan.json").write_text(
        json.dumps(
            {
                "files": args.files,
                "reference_files_per_s": reference,
                "stampd_files_per_s": ours,
                "ratio": ratio,
                "ready_ms": ready_s * 1000,
                "latency_p50_ms": p50 * 1000,
                "latency_p99_ms": p99 * 1000,
                "quiet_ms": quiet_s * 1000,
                "peak_rss_mib": rss,
                "new_directories": args.new_directories,
                "new_directories_cpu_s": mkdir_cpu,
                "new_directories_wall_s": mkdir_wall,
                "idle_cpu_s_same_wall": idle_cpu,
                "full_rescan_cpu_s": rescan_cpu,
                "new_directories_vs_rescan": mkdir_cpu / rescan_cpu,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
