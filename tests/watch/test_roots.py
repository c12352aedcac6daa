"""What is wrong with a watch root, checked the way the walk and the watch use it
(daemon/watch/roots.py): each problem names the path, the user stampd runs as, and what to do."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from stampd.daemon.watch.roots import check_root
from tests.conftest import NOBODY, unprivileged


def test_a_usable_root_and_a_symlinked_one_have_no_problem(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    assert check_root(tmp_path / "real", watched=True) is None
    assert check_root(tmp_path / "link", watched=True) is None


def test_a_missing_root_says_to_create_it_naming_the_user(tmp_path: Path) -> None:
    root = tmp_path / "records"
    problem = check_root(root, watched=False)
    assert problem is not None
    assert (problem.kind, problem.reason) == ("missing", "does not exist")
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert problem.describe(root) == (
        f"watch root {root} does not exist: create {root} or fix its permissions"
        f" (stampd runs as user {user}); it is picked up once it exists"
    )


@pytest.mark.parametrize("below_a_file", [False, True])
def test_a_file_is_not_a_directory(tmp_path: Path, below_a_file: bool) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    root = plain / "inside" if below_a_file else plain
    problem = check_root(root, watched=False)
    assert problem is not None and problem.kind == "not_directory"
    assert f"replace {root} with a directory" in problem.hint


@pytest.mark.parametrize("mode", [0o000, 0o600])
def test_a_root_without_read_or_search_permission_is_unreadable(
    shared_tmp: Path, mode: int
) -> None:
    root = shared_tmp / "closed"
    root.mkdir()
    if os.geteuid() == 0:
        os.chown(root, NOBODY, NOBODY)  # the owner's bits apply to the unprivileged check
    root.chmod(mode)  # 0o600: its owner may list it, but not look anything up inside (no x)
    (shared_tmp / "closed-parent").mkdir(mode=0o000)
    try:
        with unprivileged():
            problem = check_root(root, watched=False)
            behind = check_root(shared_tmp / "closed-parent" / "records", watched=False)
    finally:
        root.chmod(0o755)
        (shared_tmp / "closed-parent").chmod(0o755)
    assert problem is not None and problem.kind == "unreadable"
    assert problem.reason == "is not readable: Permission denied"
    assert "read and search permission" in problem.hint
    assert behind is not None and behind.kind == "unreachable"
    assert "search every parent directory" in behind.hint


def test_a_usable_root_without_its_inotify_watch_says_where_to_look(tmp_path: Path) -> None:
    problem = check_root(tmp_path, watched=False)
    assert problem is not None and problem.kind == "unwatched"
    assert "watch_root_unwatchable" in problem.hint and "max_user_watches" in problem.hint
