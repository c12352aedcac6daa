"""The reconciliation scan on real trees against a real index (reference §3.4, §3.5)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stampd.daemon.watch import scan as scan_module
from stampd.daemon.watch.filters import WatchFilter
from stampd.daemon.watch.hash_workers import HashWorkers
from stampd.daemon.watch.scan import ScanReport, scan_watch
from stampd.daemon.watch.scan_ahead import AheadInWorkers
from stampd.store.files.filestat import FileStat
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.times import utc_now
from stampd.store.index.versions import Settled
from tests.conftest import unprivileged


class Filter:
    """A tiny stand-in for WatchFilter: reject or prune by name; ``*.tmp`` is transient."""

    def __init__(self, *, reject: set[str] | None = None, prune: set[str] | None = None) -> None:
        self.reject = reject or set()
        self.prune = prune or set()

    def accepts(self, path: Path, *, transient_ok: bool = False) -> bool:
        if path.name.endswith(".tmp") and not transient_ok:
            return False
        return path.name not in self.reject

    def prunes_dir(self, path: Path) -> bool:
        return path.name in self.prune


@dataclass
class Seen:
    candidates: list[Path] = field(default_factory=list)
    stats: dict[Path, FileStat] = field(default_factory=dict)
    missing_calls: list[list[Path]] = field(default_factory=list)

    @property
    def missing(self) -> list[Path]:
        return [path for call in self.missing_calls for path in call]


@dataclass
class Env:
    root: Path
    state: Path
    index: Index
    watch: int
    #: Set: every scan's directories are compared by these worker processes, ahead of the
    #: walk (daemon/watch/scan_ahead.py), with a WatchFilter built from the same rules, as
    #: the daemon's scan does; None: in the walk's thread, as every caller but the daemon.
    workers: HashWorkers | None = None

    def record(self, *paths: Path, racy: bool = False) -> None:
        """Record real files through the writer, as the daemon does after hashing them."""
        items = []
        for path in paths:
            data = path.read_bytes()
            items.append(
                Settled(
                    watch_id=self.watch,
                    path=path,
                    stat=FileStat.of(path.lstat()),
                    sha256=hashlib.sha256(data).hexdigest(),
                    sha512=hashlib.sha512(data).hexdigest(),
                    hashed_at=utc_now(),
                    racy=racy,
                    evidence=("tsr",),
                )
            )
        self.index.record_settled(items)

    def scan(self, file_filter: Filter | None = None, **options: Any) -> tuple[ScanReport, Seen]:
        seen = Seen()

        def on_candidate(path: Path, stat: FileStat) -> None:
            seen.candidates.append(path)
            seen.stats[path] = stat

        conn = open_reader(index_path(self.state))
        chosen: Any = file_filter or Filter()
        if self.workers is not None:
            # The stand-in's rules as patterns: the workers build the filter from them.
            exclude = [f"**/{name}" for name in chosen.reject]
            exclude += [f"**/{name}/**" for name in chosen.prune]
            chosen = WatchFilter(self.root, ["**"], exclude)
            options["comparisons"] = AheadInWorkers(
                self.workers,
                index=index_path(self.state),
                include=["**"],
                exclude=exclude,
                stopping=lambda: False,
            )
        try:
            report = scan_watch(
                self.root,
                conn=conn,
                file_filter=chosen,
                on_candidate=on_candidate,
                on_missing=seen.missing_calls.append,
                **options,
            )
        finally:
            conn.close()
        assert report.candidates == len(seen.candidates)
        assert report.missing == len(seen.missing)
        return report, seen


def _make_env(root: Path, state: Path, workers: HashWorkers | None = None) -> Iterator[Env]:
    root.mkdir(exist_ok=True)
    state.mkdir()
    with Index.open(index_path(state)) as index:
        yield Env(
            root=root, state=state, index=index, watch=index.ensure_watch(root), workers=workers
        )


@pytest.fixture(scope="module")
def hash_workers() -> Iterator[HashWorkers]:
    """Two real worker processes (python -m stampd.daemon.watch.dir_hash), for the module."""
    workers = HashWorkers(2)
    workers.start()
    yield workers
    workers.close()


@pytest.fixture(params=["in the walk's thread", "ahead, in worker processes"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """Each test runs twice: the walk comparing every directory itself, and the worker
    processes comparing them ahead of it; both must give the same reports and callbacks."""
    workers = request.getfixturevalue("hash_workers") if "worker" in request.param else None
    yield from _make_env(tmp_path / "watched", tmp_path / "state", workers)


def _write(path: Path, data: bytes = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tree(root: Path) -> list[Path]:
    """Five files in a small tree, returned in the order a sorted pre-order walk meets them."""
    files = [
        _write(root / "a.txt", b"a"),
        _write(root / "b.txt", b"b"),
        _write(root / "sub" / "c.txt", b"c"),
        _write(root / "sub" / "deeper" / "d.txt", b"d"),
        _write(root / "z" / "e.txt", b"e"),
    ]
    (root / "sub2").mkdir()
    return files


def test_new_files_are_candidates_in_sorted_order(env: Env) -> None:
    files = _tree(env.root)
    report, seen = env.scan()
    assert seen.candidates == files
    assert seen.stats[files[0]] == FileStat.of(files[0].lstat())
    assert (report.directories, report.files, report.candidates) == (5, 5, 5)
    assert (report.missing, report.skipped, report.errors) == (0, 0, 0)
    assert not report.stopped and report.problem is None
    assert report.root == env.root and report.seconds >= 0


def test_recorded_files_with_the_same_key_are_left_alone(env: Env) -> None:
    env.record(*_tree(env.root))
    report, seen = env.scan()
    assert seen.candidates == [] and seen.missing == []
    assert report.files == 5


def test_a_touched_or_chmodded_file_is_a_candidate(env: Env) -> None:
    files = _tree(env.root)
    env.record(*files)
    os.utime(files[1], ns=(10**18, 10**18))
    files[3].chmod(0o600)  # only ctime changes; §3.4: ctime catches `touch -d` resets too
    _report, seen = env.scan()
    assert seen.candidates == [files[1], files[3]]


def test_a_racy_row_is_a_candidate_although_its_key_matches(env: Env) -> None:
    files = _tree(env.root)
    env.record(*files)
    env.record(files[2], racy=True)
    _report, seen = env.scan()
    assert seen.candidates == [files[2]]


def test_a_deleted_file_is_reported_missing_per_directory(env: Env) -> None:
    files = _tree(env.root)
    env.record(*files)
    files[0].unlink()
    files[1].unlink()
    report, seen = env.scan()
    assert seen.missing_calls == [[files[0], files[1]]]
    assert seen.candidates == []
    assert report.files == 3


def test_a_deleted_directory_takes_its_whole_subtree_with_it(env: Env) -> None:
    files = _tree(env.root)
    env.record(*files)
    shutil.rmtree(env.root / "sub")
    report, seen = env.scan()
    assert sorted(seen.missing) == [files[2], files[3]]
    assert report.missing == 2 and report.errors == 0


def test_a_directory_replaced_by_a_symlink_is_not_followed(env: Env, tmp_path: Path) -> None:
    files = _tree(env.root)
    env.record(*files)
    shutil.move(env.root / "z", tmp_path / "elsewhere")
    (env.root / "z").symlink_to(tmp_path / "elsewhere")
    _report, seen = env.scan()
    assert seen.missing == [files[4]]
    assert seen.candidates == []


def test_a_file_back_at_a_missing_row_is_a_candidate(env: Env) -> None:
    files = _tree(env.root)
    env.record(*files)
    env.index.mark_missing([files[0]])
    _report, seen = env.scan()
    assert seen.candidates == [files[0]]


def test_an_unreadable_row_is_retried_only_when_its_stat_changes(env: Env) -> None:
    path = _write(env.root / "locked.bin")
    env.index.record_unreadable(
        watch_id=env.watch,
        path=path,
        stat=FileStat.of(path.lstat()),
        error_class="io",
        message="Permission denied",
    )
    report, seen = env.scan()
    assert seen.candidates == [] and seen.missing == []
    assert report.files == 1
    path.chmod(0o644)  # someone fixed the permissions: ctime changed
    _report, seen = env.scan()
    assert seen.candidates == [path]
    env.index.record_unreadable(
        watch_id=env.watch, path=path, stat=None, error_class="io", message="lstat failed"
    )
    _report, seen = env.scan()  # no key to compare: every scan retries it
    assert seen.candidates == [path]


def test_a_file_no_longer_accepted_is_missing(env: Env) -> None:
    files = _tree(env.root)
    env.record(*files)
    report, seen = env.scan(Filter(reject={"b.txt"}))
    assert seen.missing == [files[1]]
    assert seen.candidates == []
    assert report.files == 4


def test_symlinks_fifos_and_sockets_are_ignored(env: Env, tmp_path: Path) -> None:
    real = _write(env.root / "real.txt")
    was_a_file = _write(env.root / "was-a-file")
    env.record(real, was_a_file)
    was_a_file.unlink()
    was_a_file.symlink_to(real)
    outside = _write(tmp_path / "outside" / "secret.txt")
    (env.root / "link-to-file").symlink_to(outside)
    (env.root / "link-to-dir").symlink_to(outside.parent, target_is_directory=True)
    os.mkfifo(env.root / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(env.root / "sock"))
        report, seen = env.scan()
    assert seen.candidates == []
    assert seen.missing == [was_a_file]  # no longer a regular file
    assert (report.directories, report.files, report.errors) == (1, 1, 0)


def test_an_unlistable_directory_is_an_error_and_its_rows_stay(shared_tmp: Path) -> None:
    """EACCES is not a deletion: as `nobody`, a 0o000 directory cannot be listed, and a
    0o444 one can be listed but its entries cannot be stat'ed. Nothing below either becomes
    missing — not even rows in a subdirectory the walk never reached."""
    env_iter = _make_env(shared_tmp / "watched", shared_tmp / "state")
    env = next(env_iter)
    files = [
        _write(env.root / "ok.txt"),
        _write(env.root / "closed" / "a.txt"),
        _write(env.root / "closed" / "inner" / "b.txt"),
        _write(env.root / "listable" / "c.txt"),
        _write(env.root / "listable" / "inner" / "d.txt"),
    ]
    env.record(*files)
    (env.root / "closed").chmod(0o000)
    (env.root / "listable").chmod(0o444)
    # The reader is opened first: as nobody, the walk reads the index through descriptors
    # opened by root, as the daemon's own connection would be.
    conn = open_reader(index_path(env.state))
    missing: list[list[Path]] = []
    candidates: list[Path] = []
    try:
        with unprivileged():
            report = scan_watch(
                env.root,
                conn=conn,
                file_filter=Filter(),
                on_candidate=lambda path, _stat: candidates.append(path),
                on_missing=missing.append,
            )
    finally:
        conn.close()
        (env.root / "closed").chmod(0o755)
        (env.root / "listable").chmod(0o755)
        env_iter.close()
    assert missing == []
    assert candidates == []
    # "closed" cannot be listed (1); in "listable", "c.txt" and "inner" cannot be stat'ed (2).
    assert report.errors == 3
    assert report.directories == 2  # the root and "listable"
    assert report.files == 1


def test_another_filesystem_is_skipped_and_its_rows_stay(env: Env) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    hidden = _write(env.root / "mnt" / "hidden.txt")
    plain = _write(env.root / "plain.txt")
    env.record(hidden, plain)
    mount = env.root / "mnt"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "stampd-test", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        assert mount.stat().st_dev != env.root.stat().st_dev
        _write(mount / "on-tmpfs.txt")
        report, seen = env.scan()
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert seen.candidates == []
    assert seen.missing == []  # hidden under the mount, not deleted
    assert (report.skipped, report.errors, report.directories) == (1, 0, 1)


def test_should_stop_interrupts_the_walk_and_reports_nothing_unvisited(env: Env) -> None:
    files = _tree(env.root)
    env.record(*files)
    shutil.rmtree(env.root / "z")
    calls = 0

    def stop_after_the_root() -> bool:
        nonlocal calls
        calls += 1
        return calls > 1

    report, seen = env.scan(should_stop=stop_after_the_root)
    assert report.stopped
    assert report.directories == 1
    # z/e.txt is gone, but the walk did not finish: it must not be declared missing.
    assert seen.missing == []


def test_prunes_dir_is_honoured(env: Env) -> None:
    files = _tree(env.root)
    env.record(*files)
    _write(env.root / "sub" / "new.txt")
    report, seen = env.scan(Filter(prune={"sub"}))
    assert seen.candidates == []
    # Nothing below a pruned directory is accepted any more: its rows are missing.
    assert sorted(seen.missing) == [files[2], files[3]]
    assert report.directories == 3  # root, sub2, z


def test_progress_is_reported_per_directory(env: Env) -> None:
    _tree(env.root)
    progress: list[tuple[int, int]] = []
    env.scan(on_progress=lambda directories, files: progress.append((directories, files)))
    assert progress == [(1, 2), (2, 3), (3, 4), (4, 4), (5, 5)]


def test_a_missing_root_is_one_clear_error(env: Env, tmp_path: Path) -> None:
    env.record(_write(env.root / "a.txt"))
    shutil.rmtree(env.root)
    report, seen = env.scan()
    assert report.errors == 1 and report.directories == 0
    assert report.problem is not None and str(env.root) in report.problem
    assert "No such file" in report.problem
    assert seen.candidates == [] and seen.missing == []


def test_a_root_that_is_a_file_is_one_clear_error(env: Env) -> None:
    env.root.rmdir()
    env.root.write_bytes(b"not a directory")
    report, seen = env.scan()
    assert report.errors == 1
    assert report.problem == f"cannot scan {env.root}: not a directory"
    assert seen.missing == []


def test_a_transient_name_is_stamped_once_left_alone_for_an_hour(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reference §3.3: transient patterns are heuristics; a `.tmp` still there after 1 h is
    taken for a real file."""
    temp = _write(env.root / ".report.tmp")
    _report, seen = env.scan()
    assert seen.candidates == []
    later = time.time_ns() + scan_module.TRANSIENT_AFTER_NS + 10**9
    monkeypatch.setattr(time, "time_ns", lambda: later)
    _report, seen = env.scan()
    assert seen.candidates == [temp]


def test_names_that_are_not_utf8_are_walked_like_any_other(env: Env) -> None:
    """File names are bytes: a Latin-1 file or directory name is a candidate, recorded, and
    unchanged on the next walk (issue 10 item 8; the index stores it escaped)."""
    root = os.fsencode(env.root)
    good = _write(env.root / "good.txt")
    latin1 = _write(Path(os.fsdecode(root + b"/bad-\xff.txt")))
    inside = _write(Path(os.fsdecode(root + b"/dir-\xfe/in.txt")))
    report, seen = env.scan()
    assert sorted(seen.candidates) == sorted([good, latin1, inside])
    assert report.errors == 0
    env.record(good, latin1, inside)
    report, seen = env.scan()
    assert (seen.candidates, seen.missing, report.errors) == ([], [], 0)
    os.unlink(os.fsencode(inside))
    _report, seen = env.scan()
    assert seen.missing == [inside]


def test_a_directory_vanishing_mid_walk_is_an_error_and_its_rows_stay(env: Env) -> None:
    """Listed by its parent, gone when its turn comes: counted, and left to its
    DirDeletedEvent or the next scan rather than guessed at."""
    files = _tree(env.root)
    env.record(*files)

    def remove_z_after_the_root(directories: int, _files: int) -> None:
        if directories == 1:
            shutil.rmtree(env.root / "z")

    report, seen = env.scan(on_progress=remove_z_after_the_root)
    assert report.errors == 1
    assert seen.missing == []
    assert report.directories == 4


def test_a_directory_swapped_for_a_symlink_mid_walk_is_never_followed(
    env: Env, tmp_path: Path
) -> None:
    """Listed by its parent as a directory, a symlink to elsewhere when its turn comes: the
    walk opens it with O_NOFOLLOW, so nothing of the link's target is offered as if it were
    in the tree, and the directory's own rows stay (an error, like a vanished one)."""
    files = _tree(env.root)
    env.record(*files)
    elsewhere = _write(tmp_path / "elsewhere" / "secret.txt").parent

    def swap_z_after_the_root(directories: int, _files: int) -> None:
        if directories == 1:
            shutil.rmtree(env.root / "z")
            (env.root / "z").symlink_to(elsewhere)

    report, seen = env.scan(on_progress=swap_z_after_the_root)
    assert seen.candidates == []
    assert seen.missing == []
    assert report.errors == 1


# --- subtree scans: a new or moved-in directory is walked, the rest of the tree is not ---


def test_a_subtree_scan_walks_only_that_directory(env: Env) -> None:
    files = _tree(env.root)
    env.record(*files)
    fresh = [_write(env.root / "new" / "x.txt"), _write(env.root / "new" / "inner" / "y.txt")]
    report, seen = env.scan(subtree=env.root / "new")
    assert seen.candidates == fresh
    assert (report.directories, report.files, report.candidates) == (2, 2, 2)
    assert report.subtree == env.root / "new" and report.problem is None


def test_a_subtree_scan_never_reports_rows_outside_it_missing(env: Env) -> None:
    files = _tree(env.root)
    env.record(*files)
    shutil.rmtree(env.root / "z")  # gone, but outside the subtree: the full scan's business
    files[0].unlink()
    _write(env.root / "new" / "x.txt")
    report, seen = env.scan(subtree=env.root / "new")
    assert seen.missing == [] and report.missing == 0
    full, seen = env.scan()
    assert sorted(seen.missing) == [files[0], files[4]] and full.subtree is None


def test_a_subtree_scan_reports_gone_rows_inside_it(env: Env) -> None:
    """A directory deleted and another one moved in under the same name: the old rows that
    the new tree lacks are missing, at every depth (the unvisited directories below it)."""
    files = _tree(env.root)
    env.record(*files)
    shutil.rmtree(env.root / "sub")
    kept = _write(env.root / "sub" / "c.txt", b"c")
    report, seen = env.scan(subtree=env.root / "sub")
    assert seen.missing == [files[3]]  # sub/deeper/d.txt
    assert seen.candidates == [kept]  # a new inode at a recorded path
    assert report.directories == 1


def test_a_subtree_behind_a_symlink_is_not_followed(env: Env, tmp_path: Path) -> None:
    outside = _write(tmp_path / "outside" / "inner" / "secret.txt")
    (env.root / "link").symlink_to(outside.parent.parent, target_is_directory=True)
    for subtree in (env.root / "link", env.root / "link" / "inner"):
        report, seen = env.scan(subtree=subtree)
        assert seen.candidates == [] and report.directories == 0


def test_a_pruned_or_vanished_subtree_is_not_walked(env: Env) -> None:
    files = _tree(env.root)
    env.record(*files)
    _write(env.root / "sub" / "deeper" / "new.txt")
    report, seen = env.scan(Filter(prune={"sub"}), subtree=env.root / "sub" / "deeper")
    assert seen.candidates == [] and seen.missing == [] and report.directories == 0
    shutil.rmtree(env.root / "sub")
    report, seen = env.scan(subtree=env.root / "sub")
    # Its rows follow its DirDeletedEvent or the next full scan; a vanished new directory
    # is no error.
    assert seen.missing == [] and (report.directories, report.errors) == (0, 0)


def test_an_unlistable_subtree_keeps_its_rows(shared_tmp: Path) -> None:
    env_iter = _make_env(shared_tmp / "watched", shared_tmp / "state")
    env = next(env_iter)
    inside = [_write(env.root / "closed" / "a.txt"), _write(env.root / "closed" / "in" / "b.txt")]
    env.record(*inside)
    (env.root / "closed").chmod(0o000)
    conn = open_reader(index_path(env.state))
    missing: list[list[Path]] = []
    try:
        with unprivileged():
            report = scan_watch(
                env.root,
                conn=conn,
                file_filter=Filter(),
                on_candidate=lambda _path, _stat: None,
                on_missing=missing.append,
                subtree=env.root / "closed",
            )
    finally:
        conn.close()
        (env.root / "closed").chmod(0o755)
        env_iter.close()
    assert missing == []
    assert (report.directories, report.errors) == (0, 1)
    assert report.problem is None  # the root is fine; only that directory is closed


def test_an_unlistable_root_is_a_problem_and_nothing_becomes_missing(shared_tmp: Path) -> None:
    env_iter = _make_env(shared_tmp / "watched", shared_tmp / "state")
    env = next(env_iter)
    env.record(_write(env.root / "a.txt"), _write(env.root / "sub" / "b.txt"))
    env.root.chmod(0o000)
    conn = open_reader(index_path(env.state))
    missing: list[list[Path]] = []
    try:
        with unprivileged():
            report = scan_watch(
                env.root,
                conn=conn,
                file_filter=Filter(),
                on_candidate=lambda _path, _stat: None,
                on_missing=missing.append,
            )
    finally:
        conn.close()
        env.root.chmod(0o755)
        env_iter.close()
    assert missing == []
    assert report.problem == f"cannot list {env.root}: Permission denied"
