"""store/files/leftovers.py: a killed run's temp files go, and nothing that is not exactly ours."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from stampd.store.files import atomic
from stampd.store.files.leftovers import is_temp_name, remove_stale_temps, sweep_archive
from tests.conftest import NOBODY

TOKEN = "0123456789abcdef"


def _old(path: Path, age: float = 3600) -> Path:
    then = time.time() - age
    os.utime(path, (then, then), follow_symlinks=False)
    return path


def test_the_pattern_is_the_one_atomic_writes(tmp_path: Path) -> None:
    # Every name atomic.py gives a temp file must be recognised, or its leftovers stay.
    name = atomic._temp_name("report.pdf.tsr")
    assert is_temp_name(name)
    assert is_temp_name(atomic._temp_name("x" * 300))  # shortened to fit NAME_MAX
    assert is_temp_name(f".a.txt.tsr.stampd-{TOKEN}.tmp")
    for other in (
        f"a.txt.stampd-{TOKEN}.tmp",  # not hidden
        ".a.txt.stampd-0123.tmp",  # short token
        f".a.txt.stampd-{TOKEN.upper()}.tmp",
        f".a.txt.stampd-{TOKEN}.tmp.bak",
        f".stampd-{TOKEN}.tmp",  # no name part
        ".notes.tmp",
    ):
        assert not is_temp_name(other), other


def test_only_stale_regular_files_of_ours_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / f".a.txt.tsr.stampd-{TOKEN}.tmp"
    stale.write_bytes(b"half")
    _old(stale)
    fresh = tmp_path / f".b.txt.tsr.stampd-{TOKEN}.tmp"
    fresh.write_bytes(b"in flight")
    users = tmp_path / ".a.txt.stampd-notours.tmp"
    users.write_bytes(b"mine")
    _old(users)
    target = tmp_path / "data.txt"
    target.write_bytes(b"data")
    link = tmp_path / f".c.txt.tsr.stampd-{TOKEN}.tmp"
    link.symlink_to(target)
    _old(link)
    folder = tmp_path / f".d.txt.tsr.stampd-{TOKEN}.tmp"
    folder.mkdir()
    _old(folder)
    names = {p.name for p in tmp_path.iterdir()}

    removed = remove_stale_temps(tmp_path, names, before=time.time() - 60)

    assert removed == 1
    assert not stale.exists()
    assert fresh.read_bytes() == b"in flight"  # written after the start: a live write's
    assert users.read_bytes() == b"mine"
    assert link.is_symlink() and target.read_bytes() == b"data"  # never followed
    assert folder.is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_a_temp_file_of_another_user_stays(tmp_path: Path) -> None:
    theirs = tmp_path / f".a.txt.tsr.stampd-{TOKEN}.tmp"
    theirs.write_bytes(b"theirs")
    os.chown(theirs, NOBODY, NOBODY)
    _old(theirs)
    assert remove_stale_temps(tmp_path, {theirs.name}, before=time.time()) == 0
    assert theirs.exists()


def test_a_directory_reached_through_a_symlink_is_not_entered(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    stale = real / f".a.txt.tsr.stampd-{TOKEN}.tmp"
    stale.write_bytes(b"x")
    _old(stale)
    (tmp_path / "via").symlink_to(real)
    assert remove_stale_temps(tmp_path / "via", {stale.name}, before=time.time()) == 0
    assert stale.exists()


def test_the_archive_sweep_visits_every_folder(tmp_path: Path) -> None:
    stale = []
    for folder in ("ab", "cd"):
        (tmp_path / "archive" / folder).mkdir(parents=True)
        kept = tmp_path / "archive" / folder / f"{folder * 32}.tsr"
        kept.write_bytes(b"proof")
        _old(kept)
        temp = tmp_path / "archive" / folder / f".{folder * 32}.tsr.stampd-{TOKEN}.tmp"
        temp.write_bytes(b"half")
        stale.append(_old(temp))
    assert sweep_archive(tmp_path, before=time.time()) == 2
    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in (tmp_path / "archive").rglob("*.tsr")) == [
        "ab" * 32 + ".tsr",
        "cd" * 32 + ".tsr",
    ]
    assert sweep_archive(tmp_path / "nothing-here", before=time.time()) == 0
