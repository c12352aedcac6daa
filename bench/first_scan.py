"""The first-scan measurement of bench_scan.py: stampd against its references, interleaved.

Each round times, one after the other on the same tree with the page cache warm,
`find | xargs sha256sum` (the limit), `aide --init` (the C peer, bench/aide_reference.py) and
a `stampd run` first scan with an empty state directory; the machine is shared, so a slow
patch then hits all three alike, and the medians over the rounds are reported.
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
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.aide_reference import AideSetup, DatabaseCheck, Timed, check_database, children_cpu_s
from bench.aide_reference import run_init as run_aide
from bench.stampd_process import drain, spawn_stampd, stop_stampd
from tests.fake_tsa import FakeTsa
from tests.tsa_pki import make_pki


def sha256sum_run(root: Path) -> Timed:
    """`find | xargs sha256sum` over the tree, timed (wall, and CPU of all its processes)."""
    subprocess.run(["sync"], check=False)
    cpu = children_cpu_s()
    start = time.perf_counter()
    subprocess.run(
        f"find {root} -type f -print0 | xargs -0 sha256sum > /dev/null", shell=True, check=True
    )
    return Timed(wall_s=time.perf_counter() - start, cpu_s=children_cpu_s() - cpu)


def warm_page_cache(root: Path) -> None:
    """Read every file once, untimed: each run then reads from the page cache alike."""
    subprocess.run(["sync"], check=False)
    subprocess.run(
        f"find {root} -type f -print0 | xargs -0 cat > /dev/null", shell=True, check=True
    )


def machine() -> dict[str, object]:
    """The machine the figures come from: CPUs usable (`nproc`) and the CPU model."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": model}


def count_rows(db: Path, table: str) -> int:
    """Rows of ``table`` in the index (0 while it does not exist yet), read-only: versions
    (one per file a first scan recorded) or jobs (one per file and evidence kind)."""
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far, every thread included (proc(5)), and
    of its live child processes (the daemon's hash workers, daemon.hash_workers)."""
    return _own_cpu_seconds(pid) + sum(_own_cpu_seconds(child) for child in _children(pid))


def _own_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0  # a child that ended meanwhile
    # After the command name: state is field 3, utime field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children.update(int(word) for word in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return children


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


@dataclass
class FirstScan:
    """One `stampd run` whose first scan of the tree is done: how long it took, and the
    daemon, still running."""

    proc: subprocess.Popen[str]
    config: Path
    db: Path
    control_socket: Path
    scans: ScanLog
    ready_s: float
    scan_s: float
    #: The daemon's CPU seconds from its start until every file had a version.
    cpu_s: float


class Evidence:
    """What the bench's watch asks for: nothing (an inventory), or ``tsr`` from a local TSA
    that accepts every request and never answers while the scan runs.

    The issue 13 figure is a first scan "hashed and indexed with jobs": each new version gets
    its pending ``tsr`` job in the same transaction, as on a stamped server. A TSA that
    answers would add the stamping (network, signatures, sidecar writes) to a scan figure; one
    that hangs (tests/fake_tsa.py ``hang``, with a ``[timestamp] timeout`` longer than the
    run) costs the daemon nothing but its few open requests, so what is timed is the scan
    and the rows, jobs included.
    """

    def __init__(self, kind: str) -> None:
        if kind not in ("tsr", "none"):
            raise ValueError(f"unknown evidence {kind!r}: tsr or none")
        self.kind = kind
        self._tsa: FakeTsa | None = None
        self._pki_dir: Path | None = None
        self._toml = ""

    def __enter__(self) -> Evidence:
        if self.kind == "tsr":
            self._pki_dir = Path(tempfile.mkdtemp(prefix="stampd-bench-pki-"))
            tsa = FakeTsa(make_pki(self._pki_dir), mode="hang", hang_seconds=3600).start()
            self._tsa = tsa
            self._toml = (
                '[timestamp]\ntimeout = "1h"\n'
                f'[[timestamp.tsa]]\nname = "hanging"\nurl = "{tsa.url}"\n'
                f'trust = "{tsa.pki.root_pem}"\n'
            )
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._tsa is not None:
            self._tsa.stop()
        if self._pki_dir is not None:
            shutil.rmtree(self._pki_dir, ignore_errors=True)

    @property
    def watch_evidence(self) -> str:
        return '["tsr"]' if self.kind == "tsr" else "[]"

    @property
    def sections(self) -> str:
        """The TOML sections the evidence needs (the TSA), after the watch."""
        return self._toml

    @property
    def jobs_per_file(self) -> int:
        return 1 if self.kind == "tsr" else 0

    def label(self) -> str:
        return (
            "with a pending tsr job per file (the TSA never answers)"
            if self.kind == "tsr"
            else "inventory only (evidence = [], no jobs)"
        )


def scan_config(base: Path, tree: Path, quiet: str, evidence: Evidence) -> Path:
    """The daemon's config for the bench: state and socket under ``base``, one watch."""
    config = base / "config.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "{base / "state"}"\ncontrol_socket = "{base / "control.sock"}"\n'
        f'log_format = "json"\n[[watch]]\npath = "{tree}"\nevidence = {evidence.watch_evidence}\n'
        f'quiet = "{quiet}"\n{evidence.sections}'
    )
    return config


def first_scan(
    base: Path, tree: Path, files: int, quiet: str, evidence: Evidence
) -> FirstScan | None:
    """Start `stampd run` on ``tree`` with an empty state directory under ``base`` and wait
    until every one of ``files`` has a version in the index, and its job when the watch has
    evidence; None if the daemon died."""
    base.mkdir()
    config = scan_config(base, tree, quiet, evidence)
    control_socket = base / "control.sock"
    db = base / "state" / "index.sqlite"
    subprocess.run(["sync"], check=False)
    start = time.perf_counter()
    proc = spawn_stampd(config, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"daemon_ready"' in line:
            break
    ready_s = time.perf_counter() - start
    scans = ScanLog(proc.stdout)
    jobs = files * evidence.jobs_per_file
    while count_rows(db, "versions") < files or (jobs and count_rows(db, "jobs") < jobs):
        time.sleep(0.05)
        if proc.poll() is not None:
            print("stampd exited early", file=sys.stderr)
            return None
    scan_s = time.perf_counter() - start
    return FirstScan(
        proc, config, db, control_socket, scans, ready_s, scan_s, cpu_seconds(proc.pid)
    )


@dataclass
class Rounds:
    """The first-scan figures of every round: the references and stampd, interleaved."""

    files: int
    sha256sum: list[Timed] = field(default_factory=list)
    aide: list[Timed] = field(default_factory=list)
    stampd: list[FirstScan] = field(default_factory=list)

    def files_per_s(self, walls: list[float]) -> float:
        """Median files/s over the rounds."""
        return statistics.median(self.files / wall for wall in walls)

    def cpu_us_per_file(self, cpus: list[float]) -> float:
        """Median CPU µs per file over the rounds."""
        return statistics.median(cpus) / self.files * 1e6


def measure_first_scans(
    base: Path,
    tree: Path,
    args: argparse.Namespace,
    aide: tuple[str, AideSetup] | None,
    evidence: Evidence,
) -> tuple[Rounds, DatabaseCheck | None] | None:
    """``args.rounds`` rounds of sha256sum, AIDE (when there) and a stampd first scan; every
    daemon but the last round's is stopped. None if a daemon died."""
    rounds = Rounds(args.files)
    check = None
    for number in range(args.rounds):
        rounds.sha256sum.append(sha256sum_run(tree))
        if aide is not None:
            rounds.aide.append(run_aide(*aide))
            if check is None:
                # Once: the reference must really hash (a rule without digests is a stat walk).
                check = check_database(aide[1], tree / "d00000" / "f000000.dat")
        scan = first_scan(base / f"stampd-{number}", tree, args.files, args.quiet, evidence)
        if scan is None:
            return None
        rounds.stampd.append(scan)
        print(
            f"round {number + 1}: sha256sum {args.files / rounds.sha256sum[-1].wall_s:,.0f}/s"
            + (f", AIDE {args.files / rounds.aide[-1].wall_s:,.0f}/s" if rounds.aide else "")
            + f", stampd {args.files / scan.scan_s:,.0f}/s",
            flush=True,
        )
        if number < args.rounds - 1:
            stop_stampd(scan.proc, timeout=60)
    return rounds, check


def find_stat_walk(root: Path) -> Timed:
    """`find TREE -printf '%i %s %T@ %C@\\n'`: the stat walk alone, what a restart's scan
    compares with the index (inode, size, mtime, ctime), timed."""
    cpu = children_cpu_s()
    start = time.perf_counter()
    subprocess.run(
        ["find", str(root), "-printf", r"%i %s %T@ %C@\n"], stdout=subprocess.DEVNULL, check=True
    )
    return Timed(wall_s=time.perf_counter() - start, cpu_s=children_cpu_s() - cpu)


@dataclass
class Restart:
    """One `stampd run` on a state directory that already holds the whole tree."""

    #: From the start of the process until its first full scan finished.
    wall_s: float
    #: The scan itself, as its ``scan_finished`` line says.
    scan_s: float
    #: Files that scan handed on to be hashed (0 on an unchanged tree, but racy rows).
    candidates: int
    files: int
    #: The daemon's CPU (workers included) until then.
    cpu_s: float


def restart_scan(config: Path) -> Restart:
    """Start `stampd run` on ``config`` (an index of the unchanged tree) and time it until
    its first full scan is done; then stop it."""
    subprocess.run(["sync"], check=False)
    start = time.perf_counter()
    proc = spawn_stampd(config, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    finished: dict[str, object] = {}
    for line in proc.stdout:
        if '"scan_finished"' in line:
            event = json.loads(line)
            if event.get("subtree") is None:
                finished = event
                break
    wall_s = time.perf_counter() - start
    cpu_s = cpu_seconds(proc.pid)
    drain(proc)
    stop_stampd(proc, timeout=60)
    return Restart(
        wall_s=wall_s,
        scan_s=float(finished.get("seconds", float("nan"))),  # type: ignore[arg-type]
        candidates=int(finished.get("candidates", -1)),  # type: ignore[call-overload]
        files=int(finished.get("files", -1)),  # type: ignore[call-overload]
        cpu_s=cpu_s,
    )
