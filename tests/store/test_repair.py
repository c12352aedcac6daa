"""store/files/repair.py: sidecars put back at a file's current name from the archive, leftovers at
an old name retired to the archive, moved sidecars kept (issue 10 item 1)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from stampd.daemon.watch.sidecar_check import SidecarCheck
from stampd.store import kinds
from stampd.store.files import repair as repair_module
from stampd.store.files.archive import archive_get, archive_put
from stampd.store.files.atomic import remove_if_holds
from stampd.store.files.repair import (
    current_proofs,
    held_elsewhere,
    repair_sidecars,
    retire_leftovers,
)
from stampd.store.files.sidecar import Layout
from stampd.store.index.database import Index, index_path
from stampd.store.index.jobs import NewProof, record_proof
from stampd.store.index.scan_rows import StampedRow
from stampd.store.kinds import JobAction, KindSpec
from tests.conftest import settled

PROOF = b"0\x82 the TSA's bytes for this content"
OTHER = b"0\x82 a proof of some other content"
SHA = hashlib.sha256(PROOF).hexdigest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    archive_put(path, PROOF, "tsr")
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    directory = tmp_path / "tree"
    directory.mkdir()
    path = directory / "b.txt"
    path.write_bytes(b"the content")
    return path


def _never(_kind: str, _data: bytes) -> bool:
    return False


def test_a_missing_sidecar_is_written_from_the_archive(data: Path, state: Path) -> None:
    before = os.stat(data)
    repair = repair_sidecars(
        data, {"tsr": (SHA,)}, layout="adjacent", state_dir=state, adopt=_never
    )
    assert repair.written == ["tsr"] and not repair.problems
    assert Path(f"{data}.tsr").read_bytes() == PROOF
    after = os.stat(data)
    assert (after.st_mtime_ns, after.st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)


def test_a_sidecar_holding_the_proof_is_left_alone(data: Path, state: Path) -> None:
    sidecar = Path(f"{data}.tsr")
    sidecar.write_bytes(PROOF)
    inode = sidecar.stat().st_ino
    repair = repair_sidecars(
        data, {"tsr": (SHA,)}, layout="adjacent", state_dir=state, adopt=_never
    )
    assert not repair.changed and not repair.archived
    assert sidecar.stat().st_ino == inode


def test_a_wrong_sidecar_is_archived_then_replaced(data: Path, state: Path) -> None:
    sidecar = Path(f"{data}.tsr")
    sidecar.write_bytes(OTHER)
    repair = repair_sidecars(
        data, {"tsr": (SHA,)}, layout="adjacent", state_dir=state, adopt=_never
    )
    assert (repair.written, repair.archived) == (["tsr"], ["tsr"])
    assert sidecar.read_bytes() == PROOF
    assert archive_get(state, _sha(OTHER), "tsr") == OTHER  # rule 6: history, not lost


def test_a_sidecar_that_verifies_for_the_content_is_adopted(data: Path, state: Path) -> None:
    sidecar = Path(f"{data}.tsr")
    sidecar.write_bytes(OTHER)
    seen: list[tuple[str, bytes]] = []

    def adopt(kind: str, found: bytes) -> bool:
        seen.append((kind, found))
        return True

    repair = repair_sidecars(data, {"tsr": (SHA,)}, layout="adjacent", state_dir=state, adopt=adopt)
    assert (repair.adopted, repair.written) == (["tsr"], [])
    assert seen == [("tsr", OTHER)]
    assert sidecar.read_bytes() == OTHER
    assert archive_get(state, _sha(OTHER), "tsr") == OTHER


def test_a_symlink_at_the_sidecar_name_is_reported_not_followed(
    data: Path, state: Path, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not ours")
    Path(f"{data}.tsr").symlink_to(target)
    repair = repair_sidecars(
        data, {"tsr": (SHA,)}, layout="adjacent", state_dir=state, adopt=_never
    )
    assert repair.written == [] and repair.problems and "symlink" in repair.problems[0][1]
    assert target.read_bytes() == b"not ours"


def test_a_proof_missing_from_the_archive_is_a_problem(data: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty-state"
    empty.mkdir()
    repair = repair_sidecars(
        data, {"tsr": (SHA,)}, layout="adjacent", state_dir=empty, adopt=_never
    )
    assert repair.written == []
    assert "no archived copy" in repair.problems[0][1]
    assert not Path(f"{data}.tsr").exists()


def test_the_mirror_layout_is_repaired_under_the_state_directory(data: Path, state: Path) -> None:
    repair = repair_sidecars(data, {"tsr": (SHA,)}, layout="mirror", state_dir=state, adopt=_never)
    assert repair.written == ["tsr"]
    mirrored = state / "mirror" / data.parent.relative_to("/") / "b.txt.tsr"
    assert mirrored.read_bytes() == PROOF
    assert not Path(f"{data}.tsr").exists()


def test_a_leftover_at_the_old_name_goes_to_the_archive(data: Path, state: Path) -> None:
    old = data.with_name("a.txt")  # the file was renamed from here to b.txt
    leftover = Path(f"{old}.tsr")
    leftover.write_bytes(PROOF)
    asked: list[tuple[str, str]] = []

    def is_leftover(kind: str, sha256: str) -> bool:
        asked.append((kind, sha256))
        return True

    retired = retire_leftovers(old, layout="adjacent", state_dir=state, is_leftover=is_leftover)
    assert retired == ["tsr"]
    assert asked == [("tsr", SHA)]
    assert not leftover.exists()
    assert archive_get(state, SHA, "tsr") == PROOF


def test_a_sidecar_of_a_deleted_file_stays(data: Path, state: Path) -> None:
    gone = data.with_name("deleted.txt")
    sidecar = Path(f"{gone}.tsr")
    sidecar.write_bytes(PROOF)
    retired = retire_leftovers(
        gone, layout="adjacent", state_dir=state, is_leftover=lambda _kind, _sha: False
    )
    assert retired == [] and sidecar.read_bytes() == PROOF


def test_a_name_holding_a_file_again_keeps_its_sidecar(data: Path, state: Path) -> None:
    Path(f"{data}.tsr").write_bytes(PROOF)
    retired = retire_leftovers(
        data, layout="adjacent", state_dir=state, is_leftover=lambda _kind, _sha: True
    )
    assert retired == [] and Path(f"{data}.tsr").exists()


def test_remove_if_holds_removes_only_the_expected_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.tsr"
    path.write_bytes(OTHER)
    assert remove_if_holds(path, PROOF) is False
    assert path.read_bytes() == OTHER  # put back
    assert [p.name for p in tmp_path.iterdir()] == ["x.tsr"]  # no temp file left
    assert remove_if_holds(path, OTHER) is True
    assert not path.exists()
    assert remove_if_holds(path, OTHER) is False


def test_remove_if_holds_never_follows_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(PROOF)
    link = tmp_path / "x.tsr"
    link.symlink_to(target)
    assert remove_if_holds(link, PROOF) is False
    assert link.is_symlink() and target.read_bytes() == PROOF


# --- the scan's look at sidecars (daemon/watch/sidecar_check.py) ---------------------------------


def _row(file_id: int, name: str, sidecars: dict[str, frozenset[str]]) -> StampedRow:
    return StampedRow(file_id, name, sidecars)


def _check(state: Path, layout: Layout, *, deep: bool) -> tuple[SidecarCheck, list[object]]:
    found: list[object] = []
    check = SidecarCheck(
        layout=layout, state_dir=state, deep=deep, on_file=found.append, on_leftover=found.append
    )
    return check, found


def test_the_scan_flags_a_missing_sidecar_from_the_listing_alone(data: Path, state: Path) -> None:
    check, found = _check(state, "adjacent", deep=False)
    rows = {
        "b.txt": _row(1, "b.txt", {"tsr": frozenset({SHA})}),
        "c.txt": _row(2, "c.txt", {"tsr": frozenset({SHA})}),
        "pending.txt": _row(3, "pending.txt", {}),  # no complete proof yet: nothing to check
    }
    names = {"b.txt", "c.txt", "c.txt.tsr", "pending.txt"}
    check.directory(str(data.parent), names, rows, present=set(rows))
    assert found == [1]
    assert (check.checked, check.flagged) == (2, 1)


def test_a_deep_scan_also_compares_the_bytes(data: Path, state: Path) -> None:
    Path(f"{data}.tsr").write_bytes(OTHER)
    rows = {"b.txt": _row(1, "b.txt", {"tsr": frozenset({SHA})})}
    names = {"b.txt", "b.txt.tsr"}
    shallow, found = _check(state, "adjacent", deep=False)
    shallow.directory(str(data.parent), names, rows, present={"b.txt"})
    assert found == []
    deep, found = _check(state, "adjacent", deep=True)
    deep.directory(str(data.parent), names, rows, present={"b.txt"})
    assert found == [1]
    Path(f"{data}.tsr").write_bytes(PROOF)
    again, found = _check(state, "adjacent", deep=True)
    again.directory(str(data.parent), names, rows, present={"b.txt"})
    assert found == []


def test_a_sidecar_without_its_file_is_a_leftover_candidate(data: Path, state: Path) -> None:
    check, found = _check(state, "adjacent", deep=False)
    names = {"b.txt", "gone.txt.tsr", "notes.ots.bak", ".b.txt.stampd-0123456789abcdef.tmp"}
    check.directory(str(data.parent), names, {}, present=set())
    assert found == [data.parent / "gone.txt"]


def test_the_mirror_layout_lists_the_mirrored_directory(data: Path, state: Path) -> None:
    mirrored = state / "mirror" / data.parent.relative_to("/")
    mirrored.mkdir(parents=True)
    (mirrored / "b.txt.tsr").write_bytes(PROOF)
    (mirrored / "gone.txt.tsr").write_bytes(PROOF)
    rows = {
        "b.txt": _row(1, "b.txt", {"tsr": frozenset({SHA})}),
        "c.txt": _row(2, "c.txt", {"tsr": frozenset({SHA})}),
    }
    check, found = _check(state, "mirror", deep=True)
    # The data directory's own names do not count for a mirror watch.
    check.directory(str(data.parent), {"b.txt", "c.txt", "c.txt.tsr"}, rows, present=set(rows))
    assert found == [2, data.parent / "gone.txt"]


# --- the queries (answered from an index with a million versions: bench/bench_index.py) ----


@pytest.mark.parametrize(
    ("sql", "plan"),
    [
        (repair_module._SQL_TARGET, "SEARCH f USING INTEGER PRIMARY KEY"),
        (repair_module._SQL_CURRENT_PROOFS, "SEARCH p USING INDEX proofs_version"),
        (repair_module._SQL_HELD_ELSEWHERE, "SEARCH p USING INDEX proofs_sidecar"),
    ],
)
def test_each_repair_query_uses_an_index(tmp_path: Path, sql: str, plan: str) -> None:
    with Index.open(index_path(tmp_path)) as index:
        rows = index.conn.execute(f"EXPLAIN QUERY PLAN {sql}", (1,) * sql.count("?"))
        described = " | ".join(row[3] for row in rows)
    assert plan in described
    assert "SCAN " not in described  # never a walk over a table


def test_current_proofs_and_held_elsewhere_read_the_index(tmp_path: Path) -> None:
    with Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(Path("/srv"))
        [first] = index.record_settled(
            [settled(watch, Path("/srv/a"), sha256="1" * 64, sha512="1" * 128)]
        )
        proof = NewProof("tsr", "t", "sha256", "1" * 64, None, None, None, None, SHA)
        record_proof(index, version_id=first.version_id, proof=proof)
        assert current_proofs(index.conn, first.file_id) == {"tsr": (SHA,)}
        assert held_elsewhere(index.conn, sha256=SHA, kind="tsr", path=Path("/srv/old"))
        assert not held_elsewhere(index.conn, sha256=SHA, kind="tsr", path=Path("/srv/a"))
        index.mark_missing([Path("/srv/a")])
        # A deleted file's proof is held by no present file: its sidecar stays.
        assert not held_elsewhere(index.conn, sha256=SHA, kind="tsr", path=Path("/srv/old"))


#: A kind only this module knows (a test's own kind, as docs/adding-an-evidence-kind.md has it).
TEST_KIND = KindSpec(
    "xyz",
    "test evidence",
    sidecar="xyzproof",
    actions=frozenset({JobAction.OBTAIN}),
    config_section=None,
    available=True,
)


def test_a_registered_kind_is_repaired_and_retired_like_the_built_in_ones(
    tmp_path: Path, data: Path, state: Path
) -> None:
    """Its proof rows are stored (no CHECK on kinds since schema 0004), its sidecar is written
    from the archive under its own extension, and a copy left at an old name is retired."""
    archive_put(state, PROOF, "xyzproof")
    with kinds.registered(TEST_KIND), Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(data.parent)
        [first] = index.record_settled(
            [settled(watch, data, sha256="1" * 64, sha512="1" * 128, evidence=["xyz"])]
        )
        proof = NewProof("xyz", "t", "sha256", "1" * 64, None, None, None, None, SHA)
        record_proof(index, version_id=first.version_id, proof=proof)
        proofs = current_proofs(index.conn, first.file_id)
        assert proofs == {"xyz": (SHA,)}
        repair = repair_sidecars(data, proofs, layout="adjacent", state_dir=state, adopt=_never)
        assert repair.written == ["xyz"] and not repair.problems
        assert Path(f"{data}.xyzproof").read_bytes() == PROOF

        old = data.with_name("a.txt")
        Path(f"{old}.xyzproof").write_bytes(PROOF)
        retired = retire_leftovers(
            old, layout="adjacent", state_dir=state, is_leftover=lambda _kind, _sha: True
        )
        assert retired == ["xyz"] and not Path(f"{old}.xyzproof").exists()
