"""Query times of `stampd ls`, `show` and `status` with one million versions in the index.

Builds a realistic index (250 directories x 1,000 files x 4 versions, each version with a
complete `tsr` proof and a done job with one attempt) through the real schema, then times
each command end to end as a subprocess (what an operator waits for) and the query alone
(in process), best of several runs. Results go to bench/results/index.json.

    python bench/bench_index.py [--dirs 250] [--files-per-dir 1000] [--versions 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stampd.store.index import queries
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.times import utc_now

ROOT = Path("/bench/records")
# STAMPD_BENCH_RESULTS: elsewhere (tests/test_bench_smoke.py runs tiny sizes, whose figures
# must not replace the real ones).
RESULTS = Path(
    os.environ.get("STAMPD_BENCH_RESULTS") or Path(__file__).resolve().parent / "results"
)


def populate(index: Index, dirs: int, files_per_dir: int, versions: int) -> int:
    now = utc_now()
    watch_id = index.ensure_watch(ROOT)
    file_id = version_id = 0
    with index.write() as conn:
        for d in range(dirs):
            file_rows, version_rows, proof_rows, job_rows, attempt_rows = [], [], [], [], []
            current_rows = []
            for f in range(files_per_dir):
                file_id += 1
                directory = f"{ROOT}/d{d:03}"
                path = f"{directory}/file-{f:04}.pdf"
                first_version = version_id + 1
                for v in range(versions):
                    version_id += 1
                    digest = f"{version_id:064x}"
                    version_rows.append(
                        (
                            version_id,
                            file_id,
                            4096 + v,
                            10**18 + v,
                            10**18 + v,
                            2049,
                            file_id,
                            digest,
                            digest * 2,
                            now,
                            now,
                        )
                    )
                    proof_rows.append(
                        (
                            version_id,
                            version_id,
                            "tsr",
                            "digicert",
                            "complete",
                            "sha256",
                            digest,
                            now,
                            f"{version_id:x}",
                            "CN=DigiCert Timestamp 2023",
                            "2031-01-06T00:00:00Z",
                            digest,
                            now,
                            now,
                        )
                    )
                    job_rows.append(
                        (version_id, "tsr", "obtain", version_id, "done", 1, now, now, now)
                    )
                    attempt_rows.append((version_id, "digicert", now, 120.5, None, 200, None))
                # The scan key is the current (last) version's stat.
                last = versions - 1
                file_rows.append(
                    (
                        file_id,
                        watch_id,
                        path,
                        directory,
                        2049,
                        file_id,
                        4096 + last,
                        10**18 + last,
                        10**18 + last,
                        "present",
                        now,
                        now,
                    )
                )
                current_rows.append((first_version + versions - 1, file_id))
            # Parents before children, so every foreign key holds at each statement as in
            # Index.record_settled; deferring the checks instead makes SQLite scan for children.
            conn.executemany(
                "INSERT INTO files (id, watch_id, path, dir, dev, ino, size, mtime_ns, ctime_ns,"
                " state, first_seen_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                file_rows,
            )
            conn.executemany("INSERT INTO versions VALUES (?,?,?,?,?,?,?,?,?,?,?)", version_rows)
            conn.executemany(
                "INSERT INTO proofs (id, version_id, kind, provider, status, digest_alg, digest,"
                " gen_time, serial, authority, not_after, sidecar_sha256, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                proof_rows,
            )
            conn.executemany(
                "INSERT INTO jobs (id, kind, action, version_id, state, tries, next_try_at,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                job_rows,
            )
            conn.executemany(
                "INSERT INTO attempts (job_id, provider, started_at, latency_ms, error_class,"
                " http_status, message) VALUES (?,?,?,?,?,?,?)",
                attempt_rows,
            )
            conn.executemany("UPDATE files SET current_version_id = ? WHERE id = ?", current_rows)
    return version_id


def best_of(runs: int, func: object) -> tuple[float, float]:
    """(best, median) wall time in milliseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return min(times), statistics.median(times)


#: `status` exits 3 when no daemon answers (DESIGN §8), as here: it still reads the index.
DAEMON_UNREACHABLE = 3


def run_query(stampd: list[str], argv: list[str]) -> None:
    done = subprocess.run([*stampd, *argv], capture_output=True, check=False)
    allowed = (0, DAEMON_UNREACHABLE) if argv[0] == "status" else (0,)
    if done.returncode not in allowed:
        raise SystemExit(f"stampd {' '.join(argv)} failed ({done.returncode}): {done.stderr!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dirs", type=int, default=250)
    parser.add_argument("--files-per-dir", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="stampd-bench-index-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        config = Path(tmp) / "config.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "{state}"\ncontrol_socket = "{tmp}/control.sock"\n'
            f'[[watch]]\npath = "{ROOT}"\nevidence = []\n'
        )
        start = time.perf_counter()
        with Index.open(index_path(state)) as index:
            total = populate(index, args.dirs, args.files_per_dir, args.versions)
        build_s = time.perf_counter() - start
        db_mib = index_path(state).stat().st_size / 2**20
        print(f"index: {total:,} versions, {db_mib:,.0f} MiB, built in {build_s:.1f} s")

        # The console script installed next to this interpreter (make bench uses .venv).
        stampd = [str(Path(sys.executable).with_name("stampd")), "--config", str(config)]
        one_dir = f"{ROOT}/d{args.dirs // 2:03}"
        one_file = f"{one_dir}/file-{args.files_per_dir // 2:04}.pdf"
        commands = {
            "status": ["status", "--json"],
            f"ls DIR ({args.files_per_dir} files)": ["ls", one_dir, "--json"],
            "ls --limit 100 (whole tree)": ["ls", "--limit", "100", "--json"],
            "show FILE": ["show", one_file, "--json"],
        }
        # Process start-up alone, to separate it from the query.
        startup = best_of(
            args.runs,
            lambda: subprocess.run([*stampd, "--version"], check=True, capture_output=True),
        )
        results: dict[str, dict[str, float]] = {
            "cli start-up (--version)": {"best_ms": startup[0], "median_ms": startup[1]}
        }
        for name, argv in commands.items():
            best, median = best_of(args.runs, lambda argv=argv: run_query(stampd, argv))
            results[f"stampd {name}"] = {"best_ms": best, "median_ms": median}

        conn = open_reader(index_path(state))
        in_process = {
            "query status_summary": lambda: queries.status_summary(conn, now=utc_now()),
            "query list_files DIR": lambda: list(queries.list_files(conn, Path(one_dir))),
            "query file_detail": lambda: queries.file_detail(conn, Path(one_file)),
        }
        for name, func in in_process.items():
            best, median = best_of(args.runs, func)
            results[name] = {"best_ms": best, "median_ms": median}
        conn.close()

    print(f"\n{'what':<40} {'best ms':>10} {'median ms':>10}")
    for name, row in results.items():
        print(f"{name:<40} {row['best_ms']:>10.1f} {row['median_ms']:>10.1f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "index.json").write_text(
        json.dumps(
            {
                "versions": total,
                "db_mib": db_mib,
                "build_s": build_s,
                "results": results,
                "cpu_count": os.cpu_count(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
