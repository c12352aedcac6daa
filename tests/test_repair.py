"""store/repair.py: sidecars put back at a file's current name from the archive, leftovers at
an old name retired to the archive, moved sidecars kept (issue 10 item 1)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from stampd.store.archive import archive_get, archive_put
from stampd.store.atomic import remove_if_holds
from stampd.store.repair import repair_sidecars, retire_leftovers

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
