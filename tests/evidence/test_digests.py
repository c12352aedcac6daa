"""The digest a job's proof covers: from the index when it has it, else the file read again
through the hasher's guards (daemon/watch/hasher.py ``rehash``), and only while it still holds
the recorded version."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from stampd.daemon.evidence.digests import ContentGone, job_digest
from stampd.store.errors import FileAccessError
from stampd.store.index.jobs import DueJob

CONTENT = b"the recorded content\n"


def _job(path: Path, *, content: bytes = CONTENT, current: bool = True) -> DueJob:
    return DueJob(
        job_id=1,
        kind="tsr",
        tries=0,
        version_id=7,
        sha256=hashlib.sha256(content).hexdigest(),
        sha512=hashlib.sha512(content).hexdigest(),
        file_id=3,
        path=path,
        watch_id=1,
        file_state="present",
        current=current,
    )


def _digest(job: DueJob, algorithm: str) -> bytes:
    return job_digest(job, algorithm, setting="timestamp.digest")


def test_the_recorded_digests_need_no_read(tmp_path: Path) -> None:
    job = _job(tmp_path / "gone.txt")  # no such file: nothing is read
    assert _digest(job, "sha256") == hashlib.sha256(CONTENT).digest()
    assert _digest(job, "sha512") == hashlib.sha512(CONTENT).digest()


def test_another_algorithm_reads_the_file_while_it_holds_the_version(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(CONTENT)
    assert _digest(_job(path), "sha384") == hashlib.sha384(CONTENT).digest()


def test_changed_or_superseded_content_is_gone_and_says_which_setting_helps(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.txt"
    path.write_bytes(b"changed since it was recorded\n")
    with pytest.raises(ContentGone, match=r"set timestamp\.digest to sha256 or sha512"):
        _digest(_job(path), "sha384")
    path.write_bytes(CONTENT)
    with pytest.raises(ContentGone) as gone:
        _digest(_job(path, current=False), "sha384")
    assert gone.value.error_class == "content_gone"


def test_a_symlink_at_the_name_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(CONTENT)
    link = tmp_path / "a.txt"
    link.symlink_to(target)
    with pytest.raises(FileAccessError, match="cannot open"):
        _digest(_job(link), "sha384")


def test_a_fifo_planted_at_the_name_does_not_hang_the_read(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    os.mkfifo(path)
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(_digest(_job(path), "sha384"))
        except BaseException as error:
            outcome.append(error)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # blocked in open(): give it a writer so the thread can end
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(timeout=5)
        pytest.fail("reading a FIFO blocked the runner's re-read")
    [error] = outcome
    assert isinstance(error, FileAccessError)
    assert "not a regular file" in str(error)
