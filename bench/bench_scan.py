"""First scan, readiness, close-to-version latency and peak RSS of `stampd run` (DESIGN §11).

1. Builds a tree of 100k files of 4 KiB (100 per directory), syncs it, and reads it once
   untimed: the page cache is warm for every run below, and nothing is dropped between runs.
2. First scan, ``--rounds`` times, the three interleaved in each round (the machine is shared:
   a slow patch then hits all three alike), median files/s and CPU µs per file of each:
   - `find TREE -type f -print0 | xargs -0 sha256sum > /dev/null`: one digest, nothing kept,
     the limit;
   - `aide --init` (bench/aide_reference.py: SHA-256 + SHA-512 and the stat attributes into
     its database), the C peer and the target (issue 13); its database is checked once to
     hold both digests of every file. Without AIDE its column is skipped with the reason;
   - stampd: `stampd run` on the tree with an empty state directory; time to `daemon_ready`
     (must not depend on the tree's size) and until every file has a version in the index
     (hashed with SHA-256 and SHA-512 and committed) and, with ``--evidence tsr`` (the
     default, issue 13's "indexed with jobs"), has its pending `tsr` job: the watch stamps
     with a local TSA that accepts requests and never answers during the run, so the rows a
     stamped server writes are all there and no network or signing is in the figure
     (bench/first_scan.py `Evidence`); ``--evidence none`` is an inventory watch. Then the
     ratios stampd/AIDE and stampd/sha256sum.
   The daemon of the last round goes on to the steps below (bench/first_scan.py).
3. Close-to-version latency: with the scan done, 100 files written and closed one at a time;
   the time from close() until the version is in the index, p50/p99, next to `quiet`.
4. Peak RSS (VmHWM) of the daemon.
5. The cost follows the change: the daemon's CPU time (user + system, /proc/PID/stat) for
   100 new directories with one file each, made in a burst, until all 100 files are recorded
   and the daemon is idle again (no scan running or pending, queues empty: the walks the
   directories caused are counted too); next to the CPU time of one full rescan of the same
   tree (`stampd rescan`) until idle, and of the idle daemon over as long as the directories
   took (its ticks and root checks).
6. Restart is cheap (issue 13 item 2): the last daemon is stopped, then ``--rounds`` times,
   interleaved, `find TREE -printf '%i %s %T@ %C@\\n'` (the stat walk alone) and a `stampd run`
   on the same state directory until its first full scan is done (start-up included), with
   the files that scan handed on to be hashed (0 but racy rows: nothing is hashed again).

    python bench/bench_scan.py [--files 100000] [--quiet 0.5s] [--rounds 3]
                               [--aide-workers N] [--evidence tsr|none]
                               [--tree PATH]   # reuse a prebuilt tree (1M files)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.aide_reference import find_aide, missing_reason, write_config  # noqa: E402
from bench.first_scan import (  # noqa: E402
    Evidence,
    ScanLog,
    cpu_seconds,
    find_stat_walk,
    machine,
    measure_first_scans,
    restart_scan,
    warm_page_cache,
)
from bench.stampd_process import STAMPD, stop_stampd  # noqa: E402
from stampd.daemon.service import control  # noqa: E402

# STAMPD_BENCH_RESULTS: elsewhere (tests/test_bench_smoke.py runs tiny sizes, whose figures
# must not replace the real ones).
RESULTS = Path(
    os.environ.get("STAMPD_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)


def build_tree(root: Path, files: int) -> None:
    block = os.urandom(4096)
    for number in range(files):
        directory = root / f"d{number // 100:05}"
        if number % 100 == 0:
            directory.mkdir(parents=True)
        # Distinct contents: the first 8 bytes carry the file number.
        (directory / f"f{number:06}.dat").write_bytes(number.to_bytes(8, "big") + block[8:])


def has_version(db: Path, path: Path) -> bool:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(
            "SELECT 1 FROM files WHERE path = ? AND current_version_id IS NOT NULL", (str(path),)
        ).fetchone()
        return row is not None
    finally:
        conn.close()


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
    parser.add_argument("--rounds", type=int, default=3, help="first scans of each, interleaved")
    parser.add_argument(
        "--aide-workers",
        default=None,
        help="AIDE's num_workers (e.g. 2 or 100%%); default: AIDE's own (1), as DESIGN §11",
    )
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--new-directories", type=int, default=100)
    parser.add_argument(
        "--evidence",
        choices=("tsr", "none"),
        default="tsr",
        help="tsr (default): every new version gets its pending tsr job, from a local TSA"
        " that never answers; none: an inventory watch, no jobs",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        default=None,
        help="a tree of --files files to reuse (built there first if it does not exist):"
        " a 1M-file tree takes minutes to write. What the bench adds to it is removed after",
    )
    args = parser.parse_args()
    aide_path = find_aide()
    aide_skipped = None if aide_path else missing_reason()
    if aide_skipped:
        print(f"AIDE column skipped: {aide_skipped}", file=sys.stderr)

    with (
        tempfile.TemporaryDirectory(prefix="stampd-bench-scan-") as tmp,
        Evidence(args.evidence) as evidence,
    ):
        base = Path(tmp)
        tree = args.tree.resolve() if args.tree else base / "tree"
        if not tree.exists():
            print(f"building {args.files:,} files of 4 KiB ...", flush=True)
            build_tree(tree, args.files)
        elif (found := sum(1 for _ in tree.rglob("*.dat"))) != args.files:
            print(f"{tree} holds {found:,} files, not --files {args.files:,}", file=sys.stderr)
            return 2
        try:
            return measure(args, base, tree, evidence, aide_path, aide_skipped)
        finally:
            if args.tree:
                remove_additions(tree)


def remove_additions(tree: Path) -> None:
    """Take out of a reused tree what the bench wrote into it (latency files, new dirs)."""
    for added in [tree / "fresh", *tree.glob("new-dir-*")]:
        shutil.rmtree(added, ignore_errors=True)


def measure(
    args: argparse.Namespace,
    base: Path,
    tree: Path,
    evidence: Evidence,
    aide_path: str | None,
    aide_skipped: str | None,
) -> int:
    """Every step of the module docstring on ``tree``; prints the table, writes scan.json."""
    quiet_s = float(args.quiet.removesuffix("s"))
    warm_page_cache(tree)
    aide = None
    if aide_path is not None:
        aide = (aide_path, write_config(base / "aide", tree, workers=args.aide_workers))
    measured = measure_first_scans(base, tree, args, aide, evidence)
    if measured is None:
        return 1
    rounds, check = measured
    if check is not None and (check.with_both_digests != args.files or not check.sample_matches):
        print(f"AIDE's database does not hold both digests of every file: {check}")
        stop_stampd(rounds.stampd[-1].proc, timeout=60)
        return 1
    daemon = rounds.stampd[-1]
    proc, db, control_socket = daemon.proc, daemon.db, daemon.control_socket

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
    mkdir_cpu = new_directories_cpu(proc, db, tree, args.new_directories, control_socket)
    mkdir_wall = time.perf_counter() - started
    idle_before = cpu_seconds(proc.pid)
    time.sleep(mkdir_wall)
    idle_cpu = cpu_seconds(proc.pid) - idle_before
    rescan_cpu = full_rescan_cpu(proc, daemon.config, daemon.scans, control_socket)
    # A tiny tree (the smoke test's) is rescanned within one clock tick of CPU: no ratio.
    mkdir_vs_rescan = mkdir_cpu / rescan_cpu if rescan_cpu > 0 else None
    rss = peak_rss_mib(proc.pid)
    stop_stampd(proc, timeout=60)
    finds, restarts = [], []
    for _round in range(args.rounds):
        finds.append(find_stat_walk(tree))
        restarts.append(restart_scan(daemon.config))
    files_now = restarts[-1].files
    find_rate = statistics.median(files_now / run.wall_s for run in finds)
    restart_rate = statistics.median(files_now / run.wall_s for run in restarts)
    restart_scan_s = statistics.median(run.scan_s for run in restarts)
    restart_cpu = statistics.median(run.cpu_s for run in restarts) / files_now * 1e6
    find_cpu = statistics.median(run.cpu_s for run in finds) / files_now * 1e6
    rehashed = max(run.candidates for run in restarts)

    reference = rounds.files_per_s([run.wall_s for run in rounds.sha256sum])
    ours = rounds.files_per_s([scan.scan_s for scan in rounds.stampd])
    ours_cpu = rounds.cpu_us_per_file([scan.cpu_s for scan in rounds.stampd])
    sum_cpu = rounds.cpu_us_per_file([run.cpu_s for run in rounds.sha256sum])
    aide_rate = rounds.files_per_s([run.wall_s for run in rounds.aide]) if rounds.aide else None
    aide_cpu = rounds.cpu_us_per_file([run.cpu_s for run in rounds.aide]) if rounds.aide else None
    ratio = ours / reference
    ratio_aide = ours / aide_rate if aide_rate else None
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    rows = [
        (
            "first scan, files/s (hashed + indexed)"
            + (" + jobs" if evidence.jobs_per_file else ""),
            f"{ours:,.0f}",
            f"aide --init {aide_rate:,.0f}/s" if aide_rate else "AIDE skipped (not installed)",
            f"{ratio_aide:.2f}x" if ratio_aide else "",
            "≥ 1.0x",
        ),
        (
            "  the same against the limit",
            f"{ours:,.0f}",
            f"find|xargs sha256sum {reference:,.0f}/s",
            f"{ratio:.2f}x",
            "",
        ),
        (
            "  CPU per file",
            f"{ours_cpu:.0f} µs",
            (f"AIDE {aide_cpu:.0f} µs, " if aide_cpu else "") + f"sha256sum {sum_cpu:.0f} µs",
            "",
            "",
        ),
        ("start → daemon_ready", f"{daemon.ready_s * 1000:.0f} ms", "", "", "< 1 s"),
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
            f"{mkdir_vs_rescan:.3f}x" if mkdir_vs_rescan is not None else "n/a",
            "≪ 1x",
        ),
        (
            "restart, unchanged tree, files/s",
            f"{restart_rate:,.0f}",
            f"find -printf stat walk {find_rate:,.0f}/s",
            f"{restart_rate / find_rate:.2f}x",
            "≥ 0.5x",
        ),
        (
            "  its scan alone / CPU per file",
            f"{restart_scan_s:.2f} s",
            f"{restart_cpu:.1f} µs CPU (find {find_cpu:.1f} µs)",
            f"{rehashed} hashed",
            "",
        ),
        (
            "  idle daemon CPU, as long",
            f"{idle_cpu * 1000:.0f} ms",
            f"over {mkdir_wall:.1f} s",
            "",
            "",
        ),
    ]
    host = machine()
    print(
        f"\n{args.files:,} files of 4 KiB, median of {args.rounds} interleaved rounds,"
        f" {host['nproc']} CPUs ({host['cpu_model']}); a shared machine: figures are noisy"
        f"\nstampd's watch: {evidence.label()}"
    )
    if aide_skipped:
        print(f"AIDE column skipped: {aide_skipped}")
    for row in rows:
        target = f"  target {row[4]}" if row[4] else ""
        print(f"{row[0]:<40} {row[1]:>12}  {row[2]:<32} {row[3]:>9}{target}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scan.json").write_text(
        json.dumps(
            {
                "files": args.files,
                "evidence": evidence.kind,
                "evidence_detail": evidence.label(),
                "machine": host,
                "rounds": args.rounds,
                "page_cache": "warm: the tree is written, synced and read once untimed; "
                "nothing is dropped between runs",
                "reference_files_per_s": reference,
                "stampd_files_per_s": ours,
                "ratio": ratio,
                "aide_files_per_s": aide_rate,
                "ratio_aide": ratio_aide,
                "aide_skipped": aide_skipped,
                "aide_config": aide[1].text if aide else None,
                "aide_database": vars(check) if check else None,
                "cpu_us_per_file": {"sha256sum": sum_cpu, "aide": aide_cpu, "stampd": ours_cpu},
                "per_round_files_per_s": {
                    "sha256sum": [args.files / run.wall_s for run in rounds.sha256sum],
                    "aide": [args.files / run.wall_s for run in rounds.aide],
                    "stampd": [args.files / scan.scan_s for scan in rounds.stampd],
                },
                "ready_ms": daemon.ready_s * 1000,
                "latency_p50_ms": p50 * 1000,
                "latency_p99_ms": p99 * 1000,
                "quiet_ms": quiet_s * 1000,
                "peak_rss_mib": rss,
                "new_directories": args.new_directories,
                "new_directories_cpu_s": mkdir_cpu,
                "new_directories_wall_s": mkdir_wall,
                "idle_cpu_s_same_wall": idle_cpu,
                "full_rescan_cpu_s": rescan_cpu,
                "new_directories_vs_rescan": mkdir_vs_rescan,
                "restart": {
                    "files": files_now,
                    "find_files_per_s": find_rate,
                    "stampd_files_per_s": restart_rate,
                    "ratio": restart_rate / find_rate,
                    "stampd_scan_s": restart_scan_s,
                    "stampd_cpu_us_per_file": restart_cpu,
                    "find_cpu_us_per_file": find_cpu,
                    "candidates_max": rehashed,
                    "per_round": [vars(run) for run in restarts],
                    "find_per_round_s": [run.wall_s for run in finds],
                },
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
