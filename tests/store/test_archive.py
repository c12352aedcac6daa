"""stampd.store.files.archive: every proof kept by content (DESIGN §1, rule 6)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from stampd.store.errors import FileAccessError, UnsafePathError
from stampd.store.files import archive
from stampd.store.files.archive import ArchivedProof, archive_get, archive_path, archive_put

PROOF = b"\x30\x82\x01\x00 a TimeStampResp"
DIGEST = hashlib.sha256(PROOF).hexdigest()


def test_archive_path_fans_out_by_first_two_hex_digits() -> None:
    digest = "ab" + "c" * 62
    assert archive_path(Path("/var/lib/stampd"), digest, "tsr") == Path(
        f"/var/lib/stampd/archive/ab/{digest}.tsr"
    )


@pytest.mark.parametrize(
    ("digest", "ext"),
    [
        ("AB" + "c" * 62, "tsr"),  # one digest, one name: lowercase only
        ("ab" * 31, "tsr"),
        ("../" + "a" * 61, "tsr"),
        ("a" * 64, "../tsr"),
        ("a" * 64, ""),
        ("a" * 64, "ots.bak"),
    ],
)
def test_archive_path_rejects_bad_components(digest: str, ext: str) -> None:
    with pytest.raises(ValueError):
        archive_path(Path("/var/lib/stampd"), digest, ext)


def test_put_stores_the_bytes_under_their_hash(tmp_path: Path) -> None:
    stored = archive_put(tmp_path, PROOF, "tsr")
    assert stored == ArchivedProof(
        path=tmp_path / "archive" / DIGEST[:2] / f"{DIGEST}.tsr", sha256=DIGEST
    )
    assert stored.path.read_bytes() == PROOF
    assert stat.S_IMODE(stored.path.stat().st_mode) == archive.ARCHIVE_MODE
    assert archive_get(tmp_path, DIGEST, "tsr") == PROOF


def test_put_is_idempotent_and_does_not_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = archive_put(tmp_path, PROOF, "tsr")
    before = first.path.stat()

    def no_write(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an intact archive copy must not be rewritten")

    monkeypatch.setattr(archive, "write_atomic", no_write)
    assert archive_put(tmp_path, PROOF, "tsr") == first
    after = first.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_same_bytes_with_other_extension_are_separate_entries(tmp_path: Path) -> None:
    a = archive_put(tmp_path, PROOF, "tsr")
    b = archive_put(tmp_path, PROOF, "ers")
    assert a.path != b.path
    assert a.sha256 == b.sha256


@pytest.mark.parametrize(
    "corrupt", [b"", PROOF[:-1], PROOF[:-1] + b"X", PROOF + b"trailing garbage"]
)
def test_put_repairs_a_corrupted_copy(tmp_path: Path, corrupt: bytes) -> None:
    path = archive_put(tmp_path, PROOF, "tsr").path
    os.chmod(path, 0o644)
    path.write_bytes(corrupt)
    with pytest.raises(FileAccessError, match="corrupted"):
        archive_get(tmp_path, DIGEST, "tsr")

    assert archive_put(tmp_path, PROOF, "tsr").path == path
    assert path.read_bytes() == PROOF
    assert stat.S_IMODE(path.stat().st_mode) == archive.ARCHIVE_MODE
    assert archive_get(tmp_path, DIGEST, "tsr") == PROOF
    assert {p.name for p in path.parent.iterdir()} == {path.name}  # no temp left


def test_get_of_a_corrupted_copy_names_the_file(tmp_path: Path) -> None:
    path = archive_put(tmp_path, PROOF, "ots").path
    os.chmod(path, 0o644)
    path.write_bytes(b"bit rot")
    with pytest.raises(FileAccessError) as info:
        archive_get(tmp_path, DIGEST, "ots")
    assert str(path) in info.value.message
    assert hashlib.sha256(b"bit rot").hexdigest() in info.value.message
    assert info.value.hint


def test_get_absent_is_none(tmp_path: Path) -> None:
    assert archive_get(tmp_path, DIGEST, "tsr") is None  # not even archive/ exists
    archive_put(tmp_path, b"other proof", "tsr")
    assert archive_get(tmp_path, DIGEST, "tsr") is None


def test_put_refuses_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    path = archive_path(tmp_path / "state", DIGEST, "tsr")
    path.parent.mkdir(parents=True)
    path.symlink_to(victim)
    with pytest.raises(UnsafePathError):
        archive_put(tmp_path / "state", PROOF, "tsr")
    assert victim.read_bytes() == b"precious"
    assert path.is_symlink()


def test_put_refuses_a_symlinked_archive_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (state / "archive").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="symlink"):
        archive_put(state, PROOF, "tsr")
    assert list((tmp_path / "elsewhere").iterdir()) == []
