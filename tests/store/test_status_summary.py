"""`stampd status`'s summary (store/index/summary.py) counts exactly what ``GROUP BY`` counts,
without walking the done jobs or the complete proofs (nearly all of a large index's;
bench/bench_index.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from stampd.store.index import summary
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.times import utc_now
from tests.conftest import settled


def _index(tmp_path: Path) -> Path:
    """1,000 files, each with one version and its job, done; then a few jobs in every other
    state, and a few files missing or unreadable."""
    path = index_path(tmp_path)
    with Index.open(path) as index:
        watch = index.ensure_watch(tmp_path / "watched")
        index.record_settled(
            [
                settled(
                    watch,
                    tmp_path / "watched" / f"{n}.pdf",
                    sha256=f"{n:064x}",
                    sha512=f"{n:0128x}",
                    ino=n,
                )
                for n in range(1, 1001)
            ]
        )
        with index.write() as conn:
            conn.execute("UPDATE jobs SET state = 'done'")
            for state, ids in (("pending", (3, 4, 5)), ("running", (7,)), ("cancelled", (9, 10))):
                conn.executemany(
                    "UPDATE jobs SET state = ? WHERE id = ?", [(state, job) for job in ids]
                )
            # A complete tsr proof for every version; a few ots proofs, pending or complete.
            conn.executemany(
                "INSERT INTO proofs (version_id, kind, provider, status, digest_alg, digest,"
                " created_at, updated_at) VALUES (?, ?, 'p', ?, 'sha256', 'd', 't', 't')",
                [(n, "tsr", "complete") for n in range(1, 1001)]
                + [(n, "ots", "pending") for n in (1, 2, 3)]
                + [(n, "ots", "complete") for n in (4, 5)]
                + [(6, "tsr", "invalid")],
            )
            conn.execute("UPDATE files SET state = 'missing' WHERE id IN (2, 3)")
            conn.execute("UPDATE files SET state = 'unreadable' WHERE id = 4")
    return path


def _steps(conn: sqlite3.Connection, run: object) -> int:
    """SQLite virtual-machine steps (in hundreds) that ``run()`` costs: no clock involved."""
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        run()  # type: ignore[operator]
    finally:
        conn.set_progress_handler(None, 0)
    return counted[0]


def test_the_counts_are_those_of_group_by(tmp_path: Path) -> None:
    conn = open_reader(_index(tmp_path))
    try:
        result = summary.status_summary(conn, now=utc_now())
        grouped_jobs = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        grouped_files = dict(conn.execute("SELECT state, COUNT(*) FROM files GROUP BY state"))
        grouped_proofs: dict[str, dict[str, int]] = {}
        for kind, status, count in conn.execute(
            "SELECT kind, status, COUNT(*) FROM proofs GROUP BY kind, status"
        ):
            grouped_proofs.setdefault(kind, {})[status] = count
        assert not conn.in_transaction  # its read transaction is over
    finally:
        conn.close()
    assert result.jobs == grouped_jobs == {"cancelled": 2, "done": 994, "pending": 3, "running": 1}
    assert list(result.jobs) == sorted(result.jobs)  # in state order, as before
    assert result.files == grouped_files == {"missing": 2, "present": 997, "unreadable": 1}
    assert list(result.files) == sorted(result.files)
    assert result.proofs == grouped_proofs
    assert result.proofs == {
        "ots": {"complete": 2, "pending": 3},
        "tsr": {"complete": 1000, "invalid": 1},
    }
    assert [list(by_status) for by_status in result.proofs.values()] == [
        ["complete", "pending"],
        ["complete", "invalid"],
    ]
    assert list(result.proofs) == ["ots", "tsr"]


def test_the_done_jobs_and_the_complete_proofs_are_not_walked(tmp_path: Path) -> None:
    conn = open_reader(_index(tmp_path))
    try:
        proofs_walk = _steps(
            conn,
            lambda: conn.execute(
                "SELECT kind, status, COUNT(*) FROM proofs GROUP BY kind, status"
            ).fetchall(),
        )
        assert proofs_walk >= 20
        assert _steps(conn, lambda: summary._proof_counts(conn)) * 4 < proofs_walk
        walk = _steps(
            conn, lambda: conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        )
        # Walking 1,000 jobs is ~70 hundred steps; the seeks and one b-tree count, a few hundred.
        assert walk >= 20
        assert _steps(conn, lambda: summary._job_counts(conn)) * 4 < walk
    finally:
        conn.close()
