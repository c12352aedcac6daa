"""stampd.daemon.watch.settle: the close-aware settle rule (reference §3.1), driven by a fake clock.

Each write pattern of reference §3.2 is replayed as the events watchdog delivers for it (§1),
against a fake filesystem whose ``lstat`` results change as the fake writers write.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from stampd.daemon.watch.settle import EventKind, Ready, Settler
from stampd.store.files.filestat import FileStat

QUIET = 0.5
MAX_WAIT = 3600.0
D = Path("/w")


class FakeFS:
    """Paths → ``os.stat_result``, with a clock; counts ``lstat`` calls."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.files: dict[Path, os.stat_result] = {}
        self.lstat_calls = 0
        self._next_ino = 100

    def clock(self) -> float:
        return self.now

    def lstat(self, path: Path) -> os.stat_result:
        self.lstat_calls += 1
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory", str(path)) from None

    def write(self, path: Path, size: int, *, mode: int = stat.S_IFREG | 0o644) -> None:
        """Create or change ``path``: new size, mtime and ctime now (same inode if it exists)."""
        old = self.files.get(path)
        if old is None:
            self._next_ino += 1
        ino = self._next_ino if old is None else old.st_ino
        ns = int(self.now * 1e9)
        self.files[path] = os.stat_result(
            (mode, ino, 1, 1, 0, 0, size, int(self.now), int(self.now), int(self.now)),
            {"st_mtime_ns": ns, "st_ctime_ns": ns},
        )

    def rename(self, src: Path, dest: Path) -> None:
        """Like rename(2): same inode under the new name, ctime updated."""
        old = self.files.pop(src)
        ns = int(self.now * 1e9)
        self.files[dest] = os.stat_result(
            tuple(old)[:10], {"st_mtime_ns": old.st_mtime_ns, "st_ctime_ns": ns}
        )

    def stat_of(self, path: Path) -> FileStat:
        return FileStat.of(self.files[path])


class Harness:
    """A Settler on a FakeFS, polled every QUIET/4 as the daemon's tick does (§3.1)."""

    def __init__(self, *, quiet: float = QUIET, max_wait: float = MAX_WAIT) -> None:
        self.fs = FakeFS()
        self.settler = Settler(
            quiet=quiet, max_wait=max_wait, clock=self.fs.clock, lstat=self.fs.lstat
        )
        self.start = self.fs.now
        self.ready: list[tuple[float, Ready]] = []

    @property
    def elapsed(self) -> float:
        return self.fs.now - self.start

    def event(self, kind: EventKind, path: Path, dest: Path | None = None) -> None:
        self.settler.on_event(kind, path, dest)

    def run(self, seconds: float) -> list[Ready]:
        """Advance the clock by ``seconds`` in QUIET/4 ticks, polling at each; the Readys."""
        found: list[Ready] = []
        end = self.fs.now + seconds
        while self.fs.now + QUIET / 4 <= end + 1e-9:
            self.fs.now += QUIET / 4
            for ready in self.settler.poll():
                self.ready.append((self.elapsed, ready))
                found.append(ready)
        self.fs.now = end
        return found


def test_write_and_close_is_ready_once_after_quiet() -> None:
    h = Harness()
    f = D / "a.bin"
    h.event("created", f)
    h.fs.write(f, 0)
    for size in (1, 2, 3, 4):
        h.run(0.2)
        h.fs.write(f, size << 20)
        h.event("modified", f)
    h.run(0.2)
    h.event("closed", f)
    closed_at = h.elapsed
    assert h.run(QUIET - 0.01) == []  # not before QUIET without events
    assert h.run(5) == [Ready(f, h.fs.stat_of(f))]
    # Two equal lstats QUIET apart, the first one QUIET after the last event.
    assert h.ready[0][0] - closed_at <= 2 * QUIET + QUIET / 4
    assert len(h.settler) == 0
    assert h.run(10) == []


def test_slow_writer_holding_the_fd_is_ready_only_after_close_at_full_size() -> None:
    # §3.2: 3 x 4 KiB with 2 s pauses, fd held open; the naive rule stamps it 4 times.
    h = Harness()
    f = D / "slow.log"
    h.event("created", f)
    for size in (4096, 8192, 12288):
        h.fs.write(f, size)
        h.event("modified", f)
        assert h.run(2) == []
    assert h.run(60) == []  # still open: no close, however quiet
    h.event("closed", f)
    (ready,) = h.run(5)
    assert ready.stat.size == 12288
    assert h.run(60) == []


def test_slow_writer_modified_every_second_never_ready_until_closed() -> None:
    h = Harness()
    f = D / "slow.log"
    h.event("created", f)
    for second in range(30):
        h.fs.write(f, 100 * (second + 1))
        h.event("modified", f)
        assert h.run(1) == []
    h.event("closed", f)
    assert [r.stat.size for r in h.run(3)] == [3000]


def test_open_file_is_ready_after_max_wait() -> None:
    h = Harness(max_wait=10)
    f = D / "kept-open.log"
    h.event("created", f)
    h.fs.write(f, 10)
    h.event("modified", f)
    assert h.run(9.9) == []
    (ready,) = h.run(2)
    assert ready == Ready(f, h.fs.stat_of(f))
    assert 10 <= h.ready[0][0] <= 10 + QUIET + QUIET / 4


def test_max_wait_still_requires_quiet_and_a_stable_stat() -> None:
    h = Harness(max_wait=5)
    f = D / "busy.log"
    h.event("created", f)
    for write in range(32):  # a write every QUIET/2, for 8 s: past max_wait
        h.fs.write(f, write + 1)
        h.event("modified", f)
        assert h.run(QUIET / 2) == []
    (ready,) = h.run(3)
    assert ready.stat.size == 32


def test_atomic_save_moved_destination_is_ready_once() -> None:
    # Events on the temp name are filtered by the caller; the final name gets only the move.
    h = Harness()
    tmp, doc = D / ".doc.txt.XXXX.tmp", D / "doc.txt"
    h.fs.write(doc, 5)  # the old version
    h.fs.write(tmp, 9)
    h.fs.rename(tmp, doc)
    h.event("moved", tmp, doc)
    assert h.run(QUIET - 0.01) == []
    (ready,) = h.run(5)
    assert ready.path == doc
    assert ready.stat.size == 9
    assert h.run(10) == []


def test_atomic_save_over_a_pending_file_replaces_its_entry() -> None:
    h = Harness()
    tmp, doc = D / "doc.txt.new", D / "doc.txt"
    h.event("created", doc)
    h.fs.write(doc, 5)
    h.event("modified", doc)  # its writer never closes it: the replaced file's flag
    h.event("created", tmp)
    h.fs.write(tmp, 9)
    h.event("modified", tmp)
    h.event("closed", tmp)
    h.fs.rename(tmp, doc)
    h.event("moved", tmp, doc)
    assert [(r.path, r.stat.size) for r in h.run(5)] == [(doc, 9)]
    assert len(h.settler) == 0


def test_move_in_without_close_is_ready_after_quiet_with_a_stable_stat() -> None:
    h = Harness()
    f = D / "moved-in.pdf"
    h.fs.write(f, 1234)
    h.event("created", f)
    assert h.run(QUIET - 0.01) == []
    assert h.run(5) == [Ready(f, h.fs.stat_of(f))]


def test_growing_file_without_events_restarts_the_wait() -> None:
    # Remote writers (NFS) and cp -r give no events after the first one; only lstat shows it.
    h = Harness()
    f = D / "growing.bin"
    h.event("created", f)
    for size in range(1, 11):
        h.fs.write(f, size)
        assert h.run(QUIET * 0.9) == []
    (ready,) = h.run(3)
    assert ready.stat.size == 10


def test_an_event_restarts_the_wait_with_a_fresh_snapshot() -> None:
    # With coarse timestamps (Linux < 6.13, §3.4) a rewrite can leave lstat unchanged; the
    # event still says the file changed, so the wait restarts from the event, and the
    # snapshot it compares against is the one taken at the event, not an older one.
    h = Harness()
    f = D / "coarse.bin"
    h.fs.write(f, 8)
    h.event("created", f)
    h.run(QUIET - QUIET / 4)
    h.event("modified", f)  # same size, same timestamp tick: lstat unchanged
    h.event("closed", f)
    event_at = h.elapsed
    assert [r.path for r in h.run(5)] == [f]
    assert QUIET <= h.ready[0][0] - event_at < 2 * QUIET


def test_deleted_while_settling_gives_nothing() -> None:
    h = Harness()
    f = D / "gone.txt"
    h.fs.write(f, 1)
    h.event("created", f)
    h.event("closed", f)
    h.run(QUIET)
    del h.fs.files[f]
    h.event("deleted", f)
    assert len(h.settler) == 0
    assert h.run(5) == []


def test_vanished_without_an_event_is_dropped() -> None:
    # A phantom path from a directory moved out fails lstat (§1).
    h = Harness()
    f = D / "phantom.txt"
    h.event("created", f)
    h.event("closed", f)
    assert h.run(5) == []
    assert len(h.settler) == 0


@pytest.mark.parametrize(
    "mode", [stat.S_IFLNK | 0o777, stat.S_IFIFO | 0o644, stat.S_IFSOCK | 0o755, stat.S_IFDIR]
)
def test_not_a_regular_file_is_dropped(mode: int) -> None:
    h = Harness()
    f = D / "special"
    h.fs.write(f, 0, mode=mode)
    h.event("created", f)
    assert h.run(5) == []
    assert len(h.settler) == 0


def test_replaced_by_a_symlink_while_settling_is_dropped() -> None:
    h = Harness()
    f = D / "swapped"
    h.fs.write(f, 3)
    h.event("created", f)
    h.run(QUIET + QUIET / 4)  # first snapshot: a regular file
    h.fs.write(f, 3, mode=stat.S_IFLNK | 0o777)
    assert h.run(5) == []
    assert len(h.settler) == 0


def test_moved_while_open_then_closed_under_the_new_name() -> None:
    h = Harness()
    early, final = D / "early.dat", D / "early.bin"
    h.event("created", early)
    h.fs.write(early, 10)
    h.event("modified", early)
    h.fs.rename(early, final)
    h.event("moved", early, final)
    assert h.run(30) == []  # the open flag came along
    h.fs.write(final, 20)
    h.event("modified", final)
    h.event("closed", final)
    assert [(r.path, r.stat.size) for r in h.run(5)] == [(final, 20)]
    assert len(h.settler) == 0


def test_rename_chain_keeps_first_seen_and_reports_only_the_last_name() -> None:
    h = Harness(max_wait=10)
    a, b, c = D / "a", D / "b", D / "c"
    h.event("created", a)
    h.fs.write(a, 7)
    h.event("modified", a)  # left open
    h.run(4)
    h.fs.rename(a, b)
    h.event("moved", a, b)
    h.run(4)
    h.fs.rename(b, c)
    h.event("moved", b, c)
    # max_wait counts from when `a` was first seen (t=0), not from the last rename (t=8).
    found = h.run(10)
    assert found == [Ready(c, h.fs.stat_of(c))]
    assert 10 <= h.ready[0][0] < 12


def test_move_of_an_unknown_source_makes_the_destination_a_candidate() -> None:
    h = Harness()
    src, dest = D / ".x.a1b2c3", D / "x"  # rsync temp name, filtered out by the caller
    h.fs.write(dest, 4)
    h.event("moved", src, dest)
    assert [r.path for r in h.run(5)] == [dest]


def test_scan_candidate_for_an_old_file_is_ready_at_the_next_poll() -> None:
    h = Harness()
    f = D / "old.pdf"
    h.fs.write(f, 99)
    h.fs.now += 86400
    h.settler.add_candidate(f, stat=h.fs.stat_of(f), changed_at=h.fs.now - 86400)
    assert h.settler.next_due() is not None
    assert h.settler.next_due() <= h.fs.now  # type: ignore[operator]
    h.fs.lstat_calls = 0
    assert h.settler.poll() == [Ready(f, h.fs.stat_of(f))]  # at once, one more equal lstat
    assert h.fs.lstat_calls == 1


def test_scan_candidate_that_changed_since_the_scan_waits() -> None:
    h = Harness()
    f = D / "old.pdf"
    h.fs.write(f, 99)
    seen = h.fs.stat_of(f)
    h.fs.now += 3600
    h.fs.write(f, 100)  # changed after the scan's stat, without an event (NFS)
    h.settler.add_candidate(f, stat=seen, changed_at=h.fs.now - 3600)
    assert h.settler.poll() == []
    assert [r.stat.size for r in h.run(5)] == [100]


def test_scan_candidate_without_age_waits_quiet() -> None:
    h = Harness()
    f = D / "new.pdf"
    h.fs.write(f, 1)
    h.settler.add_candidate(f, stat=h.fs.stat_of(f))
    assert h.run(QUIET - 0.01) == []
    assert [r.path for r in h.run(QUIET)] == [f]


def test_event_and_scan_for_the_same_path_give_one_ready() -> None:
    h = Harness()
    f = D / "both.pdf"
    h.fs.write(f, 1)
    h.event("created", f)
    h.event("closed", f)
    h.settler.add_candidate(f, stat=h.fs.stat_of(f), changed_at=h.fs.now - 100)
    h.settler.add_candidate(f, stat=h.fs.stat_of(f))
    assert len(h.settler) == 1
    assert [r.path for r in h.run(5)] == [f]


def test_scan_candidate_keeps_the_open_flag_of_a_pending_path() -> None:
    h = Harness()
    f = D / "open.log"
    h.event("created", f)
    h.fs.write(f, 1)
    h.event("modified", f)
    h.settler.add_candidate(f, stat=h.fs.stat_of(f), changed_at=h.fs.now - 1000)
    assert h.run(30) == []
    h.event("closed", f)
    assert [r.path for r in h.run(5)] == [f]


def test_immediate_needs_one_lstat_and_no_quiet() -> None:
    h = Harness()
    f = D / "now.pdf"
    h.fs.write(f, 1)
    h.settler.add_candidate(f, immediate=True)
    assert h.settler.poll() == [Ready(f, h.fs.stat_of(f))]


def test_immediate_still_waits_for_a_writer_to_close() -> None:
    h = Harness()
    f = D / "writing.pdf"
    h.event("created", f)
    h.fs.write(f, 1)
    h.event("modified", f)
    h.settler.add_candidate(f, immediate=True)
    assert h.run(30) == []
    h.event("closed", f)  # an event: the normal rule applies again
    assert h.run(QUIET - 0.01) == []
    assert [r.path for r in h.run(5)] == [f]


def test_immediate_drops_what_is_not_a_regular_file() -> None:
    h = Harness()
    f = D / "link"
    h.fs.write(f, 0, mode=stat.S_IFLNK | 0o777)
    h.settler.add_candidate(f, immediate=True)
    assert h.settler.poll() == []
    assert len(h.settler) == 0


def test_forget_and_forget_under() -> None:
    h = Harness()
    paths = [D / "keep.txt", D / "sub/a", D / "sub/deeper/b", D / "subway/c"]
    for path in paths:
        h.fs.write(path, 1)
        h.event("created", path)
    h.settler.forget_under(D / "sub")
    assert len(h.settler) == 2
    h.settler.forget(D / "keep.txt")
    h.settler.forget(D / "never-seen")
    assert [r.path for r in h.run(5)] == [D / "subway/c"]


def test_next_due() -> None:
    h = Harness()
    assert h.settler.next_due() is None
    f = D / "f"
    h.fs.write(f, 1)
    h.event("created", f)
    assert h.settler.next_due() == h.fs.now + QUIET
    h.event("deleted", f)
    assert h.settler.next_due() is None


def test_closed_brings_an_open_entry_forward() -> None:
    h = Harness()
    f = D / "f"
    h.fs.write(f, 1)
    h.event("created", f)
    h.event("modified", f)
    h.run(QUIET)  # popped, and rescheduled at max_wait since it is open
    assert h.settler.next_due() == pytest.approx(h.start + MAX_WAIT)
    h.event("closed", f)
    assert h.settler.next_due() == pytest.approx(h.fs.now + QUIET)


def test_poll_looks_only_at_entries_that_are_due() -> None:
    h = Harness()
    for i in range(10_000):
        path = D / f"f{i}"
        h.fs.write(path, i)
        h.event("created", path)
    h.fs.now += QUIET / 2
    for i in range(10):
        h.fs.write(D / f"late{i}", i)
        h.event("created", D / f"late{i}")
    at_events = h.fs.lstat_calls  # one snapshot per event
    assert at_events == 10_010
    assert h.settler.poll() == []
    assert h.fs.lstat_calls == at_events  # nothing due: nothing looked at
    h.fs.now += QUIET / 2  # the first 10 000 are due (second lstat), the late ten are not
    assert len(h.settler.poll()) == 10_000
    assert h.fs.lstat_calls == at_events + 10_000
    assert len(h.settler) == 10


def test_a_stream_of_events_does_not_grow_the_work() -> None:
    h = Harness()
    f = D / "busy"
    h.fs.write(f, 1)
    h.event("created", f)
    for _ in range(5000):
        h.fs.now += 0.01
        h.event("modified", f)
        h.event("closed", f)
        h.settler.poll()
    assert h.fs.lstat_calls == 1 + 2 * 5000  # one snapshot per event, none by the polls
    assert [r.path for r in h.run(5)] == [f]


def test_many_deleted_entries_are_not_kept() -> None:
    h = Harness()
    for i in range(20_000):
        path = D / f"t{i}"
        h.event("created", path)
        h.event("deleted", path)
    assert len(h.settler) == 0
    assert h.settler.next_due() is None
    assert h.run(5) == []


def test_lstat_errors_drop_the_entry() -> None:
    def denied(path: Path) -> os.stat_result:
        raise PermissionError(13, "Permission denied", str(path))

    clock = [0.0]
    settler = Settler(quiet=QUIET, max_wait=MAX_WAIT, clock=lambda: clock[0], lstat=denied)
    settler.on_event("created", D / "secret")
    clock[0] = 10
    assert settler.poll() == []
    assert len(settler) == 0


def test_bad_arguments() -> None:
    settler = Settler(quiet=QUIET, max_wait=MAX_WAIT)
    with pytest.raises(ValueError, match="destination"):
        settler.on_event("moved", D / "a")
    with pytest.raises(ValueError, match="unknown event"):
        settler.on_event("opened", D / "a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=">= 0"):
        Settler(quiet=-1, max_wait=MAX_WAIT)


def test_real_files(tmp_path: Path) -> None:
    """With the real lstat: a written file settles; a symlink, a FIFO and a socket do not."""
    clock = [0.0]
    settler = Settler(quiet=QUIET, max_wait=MAX_WAIT, clock=lambda: clock[0])
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 100)
    link = tmp_path / "link"
    link.symlink_to(data)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        for path in (data, link, fifo, sock_path, tmp_path):
            settler.on_event("created", path)
        ready: list[Ready] = []
        for tick in range(1, 20):
            clock[0] = tick * QUIET / 4
            ready += settler.poll()
    assert ready == [Ready(data, FileStat.of(data.lstat()))]
    assert len(settler) == 0


def test_real_file_touched_back_is_not_stable(tmp_path: Path) -> None:
    """``touch -d`` resets mtime but not ctime: the snapshot still differs (§3.4)."""
    clock = [0.0]
    settler = Settler(quiet=QUIET, max_wait=MAX_WAIT, clock=lambda: clock[0])
    data = tmp_path / "data.bin"
    data.write_bytes(b"1")
    before = data.lstat()
    settler.add_candidate(data, stat=FileStat.of(before), changed_at=-1000)
    data.write_bytes(b"2")
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = data.lstat()
    if after.st_ctime_ns == before.st_ctime_ns:
        pytest.skip("coarse ctime: both writes fell in one timestamp tick")
    assert settler.poll() == []
    clock[0] = QUIET
    assert settler.poll() == [Ready(data, FileStat.of(after))]


def test_lost_events_clear_the_open_for_write_flags() -> None:
    # An inotify overflow can swallow the `closed` of a finished file; waiting for it would
    # hold the file back until max_wait.
    h = Harness()
    f = D / "closed-but-we-never-heard.txt"
    h.fs.write(f, 10)
    h.event("created", f)
    h.event("modified", f)
    assert h.run(QUIET * 4) == []
    h.settler.events_lost()
    assert [r.path for r in h.run(QUIET * 4)] == [f]


def test_membership_tells_pending_paths() -> None:
    h = Harness()
    f = D / "pending.txt"
    h.fs.write(f, 3)
    h.event("created", f)
    assert f in h.settler
    h.run(5)
    assert f not in h.settler
