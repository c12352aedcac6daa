"""CLI start-up against `python -c pass`, measured in the same run (issue 13, DESIGN §11).

A short command's time is mostly the interpreter starting and the imports it makes. Each
contender is a fresh process, as a user or a script runs it; the reference is the same
interpreter doing nothing (`python -c pass`: the interpreter and `site`, which the `stampd`
console script pays too). The rounds are interleaved (every contender once per round) so a
slow patch of a shared machine hits them all alike, and the median is reported:

- `stampd --version`
- `stampd digest FILE`, a 4 KiB file
- `stampd status` against a running daemon (`stampd run` on a one-file, inventory-only watch)
- `stampd status` with no daemon (exit 3: the index is still shown)
- `stampd --help` (not a goal: every command listed from the table in daemon/cli/app.py)

Goal: each of the first four starts at most 100 ms over `python -c pass` (median wall time).
Every process runs with its bytecode cached, as an installed stampd does (pip compiles it):
PYTHONDONTWRITEBYTECODE is dropped and the cache goes to a temporary PYTHONPYCACHEPREFIX, so
nothing is written into the tree and the warm-up round fills it; without a cache each run
would compile stampd's ~50 modules again (~45 ms measured here), which no installed copy does.
The best run and the CPU time (user + system) of each process are shown beside it: on a
machine that other work shares, they move less than the median wall time. Prints a table,
writes bench/results/cli.json and exits 1 when a goal is missed.

With --instructions (and valgrind installed), each contender also runs once under
`valgrind --tool=callgrind` and the instructions it executed are reported: a count that other
work on the machine does not move, to compare two trees measured at different times.

    python bench/bench_cli.py [--runs 30] [--instructions]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stampd_process import STAMPD, start_stampd, stop_stampd  # noqa: E402

# STAMPD_BENCH_RESULTS: elsewhere (tests/test_bench_smoke.py runs tiny sizes, whose figures
# must not replace the real ones).
RESULTS = Path(
    os.environ.get("STAMPD_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)
#: Issue 13 / DESIGN §11: start-up over `python -c pass`, median wall time.
GOAL_MS = 100.0
REFERENCE = "python -c pass"
DAEMON_UNREACHABLE = 3


def timed(argv: list[str], expected: int) -> tuple[float, float]:
    """Run ``argv`` once: its wall time and its CPU time (user + system), in ms."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # wait4: the child's own rusage, not the sum over every child this process ever reaped.
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - start) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != expected:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}, expected {expected}")
    return wall, (usage.ru_utime + usage.ru_stime) * 1000


def check_output(argv: list[str], expected: int, wanted: str) -> None:
    """A benchmark of wrong answers is worthless: each command does its work first."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != expected or wanted not in done.stdout:
        raise SystemExit(
            f"{' '.join(argv)}: exit {done.returncode} (expected {expected}), "
            f"stdout {done.stdout[:300]!r}, stderr {done.stderr[:300]!r}"
        )


def wait_until_recorded(config: Path, timeout: float = 30.0) -> None:
    """Until the daemon has recorded the one file (`status` then shows a full index)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            [STAMPD, "--config", str(config), "status", "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and json.loads(done.stdout)["summary"]["versions"] >= 1:
            return
        time.sleep(0.1)
    raise SystemExit("the daemon did not record the bench's file in time")


def measure(contenders: dict[str, tuple[list[str], int]], runs: int) -> dict[str, dict[str, float]]:
    """``runs`` interleaved rounds (after one warm-up round): median and best of each."""
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    for round_number in range(runs + 1):
        for name, (argv, expected) in contenders.items():
            wall, cpu = timed(argv, expected)
            if round_number:  # round 0 warms the page cache and the .pyc files
                walls[name].append(wall)
                cpus[name].append(cpu)
    return {
        name: {
            "median_ms": statistics.median(walls[name]),
            "best_ms": min(walls[name]),
            "cpu_median_ms": statistics.median(cpus[name]),
        }
        for name in contenders
    }


def instructions(argv: list[str], expected: int) -> int:
    """Instructions ``argv`` executes, counted by valgrind's callgrind (the process's own)."""
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    counted = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != expected or counted is None:
        raise SystemExit(f"valgrind {' '.join(argv)}: exit {done.returncode}, {done.stderr[-300:]}")
    return int(counted.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="interleaved rounds (median)")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions (valgrind)"
    )
    args = parser.parse_args()
    if args.instructions and shutil.which("valgrind") is None:
        print("--instructions needs valgrind (Debian package valgrind)", file=sys.stderr)
        return 1
    if not Path(STAMPD).exists():
        print("no stampd program beside this Python: run it with .venv/bin/python", file=sys.stderr)
        return 1

    # mkdtemp under /tmp: the control socket's path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="stampd-bench-cli-") as tmp:
        base = Path(tmp)
        # Inherited by every process below, the daemon too (see the docstring).
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
        tree = base / "tree"
        tree.mkdir()
        small = base / "small.bin"
        small.write_bytes(os.urandom(4096))
        (tree / "a.txt").write_bytes(b"one file\n")
        state = base / "state"
        config = base / "config.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{state}"\ncontrol_socket = "{base}/control.sock"\n'
            f'log_format = "json"\n[[watch]]\npath = "{tree}"\nevidence = []\n'
        )
        # The same index, and a control socket where nothing listens.
        no_daemon = base / "no-daemon.toml"
        no_daemon.write_text(
            config.read_text().replace(f"{base}/control.sock", f"{base}/nobody.sock")
        )
        contenders: dict[str, tuple[list[str], int]] = {
            REFERENCE: ([sys.executable, "-c", "pass"], 0),
            "stampd --version": ([STAMPD, "--version"], 0),
            "stampd digest FILE (4 KiB)": ([STAMPD, "digest", str(small)], 0),
            "stampd status (daemon running)": ([STAMPD, "--config", str(config), "status"], 0),
            "stampd status (no daemon, exit 3)": (
                [STAMPD, "--config", str(no_daemon), "status"],
                DAEMON_UNREACHABLE,
            ),
            "stampd --help": ([STAMPD, "--help"], 0),
        }
        goals = set(list(contenders)[1:5])

        proc = start_stampd(config)
        try:
            wait_until_recorded(config)
            check_output([STAMPD, "--version"], 0, "stampd, version")
            check_output([STAMPD, "digest", str(small)], 0, str(small))
            check_output(contenders["stampd status (daemon running)"][0], 0, "daemon:   running")
            check_output(
                contenders["stampd status (no daemon, exit 3)"][0],
                DAEMON_UNREACHABLE,
                "versions: 1",
            )
            check_output([STAMPD, "--help"], 0, "verify")
            results = measure(contenders, args.runs)
            if args.instructions:
                for name, (argv, expected) in contenders.items():
                    results[name]["instructions"] = instructions(argv, expected)
        finally:
            stop_stampd(proc, timeout=30)

    reference = results[REFERENCE]
    ok = True
    print(f"\nCLI start-up, median of {args.runs} interleaved runs (CPU = user + system)")
    print(f"  {'command':<36} {'wall':>8} {'over ref':>9} {'best':>8} {'CPU':>8} {'over ref':>9}")
    for name, row in results.items():
        row["over_reference_ms"] = row["median_ms"] - reference["median_ms"]
        row["cpu_over_reference_ms"] = row["cpu_median_ms"] - reference["cpu_median_ms"]
        verdict = ""
        if name in goals:
            row["goal_over_reference_ms"] = GOAL_MS
            row["pass"] = row["over_reference_ms"] <= GOAL_MS
            ok = ok and bool(row["pass"])
            verdict = f"  goal ≤ {GOAL_MS:.0f}: {'PASS' if row['pass'] else 'FAIL'}"
        counted = ""
        if "instructions" in row:
            over = row["instructions"] - reference["instructions"]
            row["instructions_over_reference"] = over
            counted = f"  {row['instructions'] / 1e6:>5.0f}M instructions (+{over / 1e6:.0f}M)"
        print(
            f"  {name:<36} {row['median_ms']:>6.1f} ms {row['over_reference_ms']:>+6.1f} ms"
            f" {row['best_ms']:>6.1f} ms"
            f" {row['cpu_median_ms']:>6.1f} ms {row['cpu_over_reference_ms']:>+6.1f} ms"
            f"{counted}{verdict}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli.json").write_text(
        json.dumps(
            {
                "runs": args.runs,
                "reference": REFERENCE,
                "goal_over_reference_ms": GOAL_MS,
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "machine": platform.machine(),
                "python": platform.python_version(),
                "results": results,
            },
            indent=2,
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
