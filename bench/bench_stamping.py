"""RFC 3161 stamping: throughput against a local TSA, and close → sidecar latency (DESIGN §11).

The local TSAs are the ones the tests use (tests/fake_tsa.py), on loopback in this process:
``openssl ts -reply`` behind a small HTTP server (a process per request, like a real TSA's
signing step) and a pure-Python signer (fast, so stampd's own cost shows).

1. Reference: the TSA's own capacity — sequential requests from a plain httpx client,
   tokens parsed but not verified — in requests/s, measured in this run.
2. Throughput: `stampd run` with `evidence = ["tsr"]`; N files dropped at once; files/s from
   the first write until every job is done (hashing, settling, requesting, verifying the
   token completely, archive + sidecar + proof row), as a ratio of the reference.
3. Latency: files written and closed one at a time; close() → `FILE.tsr` on disk, p50/p99,
   against the target of quiet + 150 ms / quiet + 1 s.
4. Failover: N files stamped with three TSAs configured — one that takes the request and never
   answers, one answering 503, one good (round-robin, so every job starts at another one) —
   against the good TSA alone, same run, same `timeout`. The extra time, in multiples of
   `timeout`, is what the broken TSAs cost: the circuit breaker should keep it to a few
   `timeout`s however many files there are, so it is shown for two file counts.

    python bench/bench_stamping.py [--files 500] [--quiet 0.5s] [--latency-samples 60]
                                   [--failover-files 100,200] [--only-failover]

Results go to bench/results/stamping.json; `--only-failover` replaces just its "failover" part.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.stampd_process import start_stampd, stop_stampd  # noqa: E402
from stampd.store.formats.tsp import build_request, parse_response  # noqa: E402
from tests.fake_tsa import FakeTsa, OpenSslTsa  # noqa: E402
from tests.tsa_pki import Pki, make_pki  # noqa: E402

# STAMPD_BENCH_RESULTS: elsewhere (tests/test_bench_smoke.py runs tiny sizes, whose figures
# must not replace the real ones).
RESULTS = Path(
    os.environ.get("STAMPD_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)


def reference_requests_per_s(url: str, requests: int) -> float:
    with httpx.Client() as client:
        start = time.perf_counter()
        for number in range(requests):
            digest = hashlib.sha256(number.to_bytes(8, "big")).digest()
            reply = client.post(
                url,
                content=build_request(digest, "sha256").der,
                headers={"Content-Type": "application/timestamp-query"},
            )
            parse_response(reply.content)
        return requests / (time.perf_counter() - start)


def done_jobs(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE kind = 'tsr' AND state = 'done'"
            ).fetchone()
            return int(row[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


class Daemon:
    def __init__(
        self,
        base: Path,
        url: str | dict[str, str],
        root_pem: Path,
        quiet: str,
        *,
        timeout: str = "10s",
    ) -> None:
        """``url``: the one TSA's, or name → URL of several (round-robin, in this order)."""
        self.tree = base / "tree"
        self.tree.mkdir()
        self.state = base / "state"
        config = base / "config.toml"
        tsas = {"local": url} if isinstance(url, str) else url
        config.write_text(
            f'[daemon]\nstate_dir = "{self.state}"\ncontrol_socket = "{base}/control.sock"\n'
            f'log_format = "json"\n[[watch]]\npath = "{self.tree}"\nevidence = ["tsr"]\n'
            f'quiet = "{quiet}"\n[timestamp]\ntimeout = "{timeout}"\n'
            + "".join(
                f'[[timestamp.tsa]]\nname = "{name}"\nurl = "{tsa_url}"\ntrust = "{root_pem}"\n'
                for name, tsa_url in tsas.items()
            )
        )
        self.proc = start_stampd(config)

    def stop(self) -> None:
        stop_stampd(self.proc, timeout=60)


def stamping_seconds(daemon: Daemon, files: int) -> float:
    """From the first of ``files`` files written at once until every one is stamped."""
    db = daemon.state / "index.sqlite"
    start = time.perf_counter()
    for number in range(files):
        (daemon.tree / f"burst-{number:05}.dat").write_bytes(os.urandom(4096))
    while done_jobs(db) < files:
        if daemon.proc.poll() is not None:
            raise RuntimeError("stampd exited early")
        time.sleep(0.02)
    return time.perf_counter() - start


def throughput(daemon: Daemon, files: int) -> float:
    return files / stamping_seconds(daemon, files)


FAILOVER_TIMEOUT_S = 1.0


def failover(base: Path, pki: Pki, counts: list[int]) -> dict[str, object]:
    """Section 4: the cost of a hanging and a failing TSA next to a good one."""
    timeout = f"{FAILOVER_TIMEOUT_S:g}s"
    runs: list[dict[str, float]] = []
    with (
        FakeTsa(pki, mode="hang") as hanging,
        FakeTsa(pki, mode="status_503_retry_after", retry_after=0) as busy,
        FakeTsa(pki) as good,
    ):
        for files in counts:
            run: dict[str, float] = {"files": files}
            for label, tsas in (
                ("good_alone", {"good": good.url}),
                ("three_tsas", {"hanging": hanging.url, "busy": busy.url, "good": good.url}),
            ):
                run_dir = base / f"failover-{label}-{files}"
                run_dir.mkdir()
                asked = (hanging.requests, busy.requests)
                daemon = Daemon(run_dir, tsas, pki.root_pem, "200ms", timeout=timeout)
                try:
                    run[f"{label}_s"] = stamping_seconds(daemon, files)
                finally:
                    daemon.stop()
            run["hanging_requests"] = hanging.requests - asked[0]
            run["busy_requests"] = busy.requests - asked[1]
            run["extra_s"] = run["three_tsas_s"] - run["good_alone_s"]
            run["extra_in_timeouts"] = run["extra_s"] / FAILOVER_TIMEOUT_S
            runs.append(run)
    return {
        "timeout_s": FAILOVER_TIMEOUT_S,
        "selection": "round-robin",
        "busy_tsa": "HTTP 503, Retry-After: 0",
        "runs": runs,
    }


def print_failover(section: dict[str, object]) -> None:
    timeout = section["timeout_s"]
    print(
        f"\nfailover: a hanging TSA, a 503 TSA and a good one vs the good one alone"
        f" (timeout {timeout} s)"
    )
    runs = section["runs"]
    assert isinstance(runs, list)
    for run in runs:
        print(
            f"  {int(run['files']):>5} files   good alone {run['good_alone_s']:>6.2f} s"
            f"   three TSAs {run['three_tsas_s']:>6.2f} s"
            f"   extra {run['extra_s']:>5.2f} s = {run['extra_in_timeouts']:.1f} x timeout"
            f"   (requests: hanging {int(run['hanging_requests'])},"
            f" 503 {int(run['busy_requests'])})"
        )


def latencies(daemon: Daemon, samples: int) -> list[float]:
    fresh = daemon.tree / "fresh"
    fresh.mkdir()
    time.sleep(1.0)
    measured = []
    for number in range(samples):
        path = fresh / f"new-{number}.dat"
        with path.open("wb") as handle:
            handle.write(os.urandom(4096))
        closed = time.perf_counter()
        sidecar = path.with_name(path.name + ".tsr")
        while not sidecar.exists():
            time.sleep(0.002)
        measured.append(time.perf_counter() - closed)
    return sorted(measured)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--quiet", default="0.5s")
    parser.add_argument("--latency-samples", type=int, default=60)
    parser.add_argument("--failover-files", default="100,200", help="file counts, comma-separated")
    parser.add_argument("--only-failover", action="store_true", help="run section 4 alone")
    args = parser.parse_args()
    counts = [int(count) for count in args.failover_files.split(",")]
    if args.only_failover:
        with tempfile.TemporaryDirectory(prefix="stampd-bench-tsr-") as tmp:
            base = Path(tmp)
            section = failover(base, make_pki(base / "pki", "Bench"), counts)
        print_failover(section)
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / "stamping.json"
        document = json.loads(path.read_text()) if path.exists() else {}
        document["failover"] = section
        path.write_text(json.dumps(document, indent=2))
        return 0
    quiet_s = float(args.quiet.removesuffix("s"))
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="stampd-bench-tsr-") as tmp:
        base = Path(tmp)
        pki = make_pki(base / "pki", "Bench")
        for name, server in (
            ("python TSA", FakeTsa(pki)),
            ("openssl ts -reply TSA", OpenSslTsa(base / "openssl", pki)),
        ):
            with server:
                reference = reference_requests_per_s(server.url, 200)
                run_dir = base / name.replace(" ", "-")
                run_dir.mkdir()
                daemon = Daemon(run_dir, server.url, pki.root_pem, "200ms")
                try:
                    ours = throughput(daemon, args.files)
                finally:
                    daemon.stop()
                entry = {"reference_requests_per_s": reference, "stampd_files_per_s": ours}
                if name == "openssl ts -reply TSA":
                    lat_dir = base / "latency"
                    lat_dir.mkdir()
                    daemon = Daemon(lat_dir, server.url, pki.root_pem, args.quiet)
                    try:
                        measured = latencies(daemon, args.latency_samples)
                    finally:
                        daemon.stop()
                    entry["latency_p50_ms"] = statistics.median(measured) * 1000
                    entry["latency_p99_ms"] = (
                        measured[min(len(measured) - 1, int(len(measured) * 0.99))] * 1000
                    )
                results[name] = entry
        failover_section = failover(base, pki, counts)

    print(f"\n{args.files:,} files of 4 KiB dropped at once; quiet 200 ms for throughput")
    for name, entry in results.items():
        ratio = entry["stampd_files_per_s"] / entry["reference_requests_per_s"]
        entry["ratio"] = ratio
        print(
            f"{name:<24} stampd {entry['stampd_files_per_s']:>7.1f} files/s"
            f"   TSA alone {entry['reference_requests_per_s']:>7.1f} req/s   ratio {ratio:.2f}x"
        )
    openssl = results["openssl ts -reply TSA"]
    p50, p99 = openssl["latency_p50_ms"], openssl["latency_p99_ms"]
    quiet_ms = quiet_s * 1000
    print(
        f"close → sidecar (openssl TSA, quiet {quiet_ms:.0f} ms, {args.latency_samples} files):"
        f" p50 {p50:.0f} ms (+{p50 - quiet_ms:.0f}, target ≤ +150)"
        f"  p99 {p99:.0f} ms (+{p99 - quiet_ms:.0f}, target ≤ +1000)"
    )
    print_failover(failover_section)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stamping.json").write_text(
        json.dumps(
            {
                "files": args.files,
                "quiet_ms": quiet_ms,
                "results": results,
                "latency_target_p50_ms": quiet_ms + 150,
                "latency_target_p99_ms": quiet_ms + 1000,
                "latency_pass": p50 <= quiet_ms + 150 and p99 <= quiet_ms + 1000,
                "failover": failover_section,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
