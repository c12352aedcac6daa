"""Every present file's proofs sit where backup tools look for them (issue 10 item 1).

`stampd run` with a local TSA on real trees: after `mv a.txt b.txt` — live, or while the
daemon was down — `b.txt.tsr` holds the proof (`openssl ts -verify` and `stampd verify`
agree), and `a.txt.tsr` is retired to the archive, never simply lost. A sidecar moved along
with its file is kept; one that verifies but stampd never obtained is adopted. A sidecar
deleted or overwritten by hand is put back by `stampd rescan`, which says how many it
repaired.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stampd.store.files.archive import archive_path
from stampd.store.formats.tsp import build_request
from tests.conftest import require_tool
from tests.daemon_harness import RunningDaemon, wait_for
from tests.fake_tsa import FakeTsa
from tests.tsa_pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Rename")


@pytest.fixture
def tsa(pki: Pki) -> Iterator[FakeTsa]:
    with FakeTsa(pki) as server:
        yield server


@pytest.fixture
def daemon(tmp_path: Path, pki: Pki, tsa: FakeTsa) -> Iterator[RunningDaemon]:
    running = _daemon(tmp_path, pki, tsa).start()
    try:
        yield running
    finally:
        assert running.stop() == 0


def _daemon(tmp_path: Path, pki: Pki, tsa: FakeTsa) -> RunningDaemon:
    return RunningDaemon(
        tmp_path,
        quiet="0.2s",
        evidence='["tsr"]',
        extra=f'[[timestamp.tsa]]\nname = "local"\nurl = "{tsa.url}"\ntrust = "{pki.root_pem}"\n',
    )


def _tsr(path: Path) -> Path:
    return path.with_name(path.name + ".tsr")


def _stamped(daemon: RunningDaemon, path: Path) -> bytes:
    wait_for(_tsr(path).exists, 30, f"{_tsr(path).name}", daemon)
    return _tsr(path).read_bytes()


def _archived(daemon: RunningDaemon, data: bytes) -> bool:
    return archive_path(daemon.state, hashlib.sha256(data).hexdigest(), "tsr").exists()


def _verified(daemon: RunningDaemon, pki: Pki, path: Path) -> None:
    openssl = require_tool("openssl")
    checked = subprocess.run(
        [
            openssl,
            "ts",
            "-verify",
            "-data",
            str(path),
            "-in",
            str(_tsr(path)),
            "-CAfile",
            str(pki.root_pem),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    verdict = daemon.cli("verify", str(path))
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert f"{path}: tsr valid" in verdict.stdout


def _moved(old: Path, new: Path) -> bool:
    return _tsr(new).exists() and not _tsr(old).exists()


def _proofs_of(daemon: RunningDaemon, path: Path) -> list[dict[str, object]]:
    shown = json.loads(daemon.cli("show", str(path), "--json").stdout)
    if "file" not in shown:
        return []  # not recorded at this name yet: {"error": ...}
    return [proof for version in shown["file"]["versions"] for proof in version["proofs"]]


def test_a_live_rename_moves_the_proof_to_the_new_name(
    daemon: RunningDaemon, pki: Pki, tsa: FakeTsa
) -> None:
    old, new = daemon.watched / "a.txt", daemon.watched / "b.txt"
    old.write_bytes(b"contract, signed")
    token = _stamped(daemon, old)
    requests = tsa.requests
    old.rename(new)
    wait_for(lambda: _moved(old, new), 30, "b.txt.tsr written, a.txt.tsr retired", daemon)
    assert _tsr(new).read_bytes() == token  # the same proof: same content
    assert _archived(daemon, token)
    _verified(daemon, pki, new)
    assert tsa.requests == requests  # nothing new was asked for: it is the same content
    assert daemon.count("sidecars_retired") == 1


def test_a_rename_while_the_daemon_was_down_is_repaired_at_start(
    tmp_path: Path, pki: Pki, tsa: FakeTsa
) -> None:
    daemon = _daemon(tmp_path, pki, tsa).start()
    old, new = daemon.watched / "sub" / "c.txt", daemon.watched / "d.txt"
    old.parent.mkdir()
    old.write_bytes(b"lab data, run 7")
    try:
        token = _stamped(daemon, old)
    finally:
        assert daemon.stop() == 0
    old.rename(new)
    daemon = _daemon(tmp_path, pki, tsa).start()
    try:
        wait_for(lambda: _moved(old, new), 30, "the rename repaired by the start-up scan", daemon)
        assert _tsr(new).read_bytes() == token
        assert _archived(daemon, token)
        _verified(daemon, pki, new)
        assert daemon.files()[str(new)] == "present"
    finally:
        assert daemon.stop() == 0


def test_a_sidecar_moved_along_with_its_file_is_kept(daemon: RunningDaemon, pki: Pki) -> None:
    old, new = daemon.watched / "e.txt", daemon.watched / "f.txt"
    old.write_bytes(b"minutes of the meeting")
    token = _stamped(daemon, old)
    inode = _tsr(old).stat().st_ino
    # As a user does it: both in one go, the sidecar right after the file.
    _tsr(old).rename(_tsr(new))
    old.rename(new)
    wait_for(lambda: str(new) in daemon.files(), 30, "the rename recorded", daemon)
    daemon.wait_event("versions_committed", count=2)
    assert _tsr(new).stat().st_ino == inode  # not rewritten: the user's file stays
    assert _tsr(new).read_bytes() == token
    _verified(daemon, pki, new)
    assert daemon.count("sidecars_repaired") == 0


def test_a_sidecar_that_verifies_but_was_never_ours_is_adopted(
    daemon: RunningDaemon, pki: Pki, tsa: FakeTsa
) -> None:
    old, new = daemon.watched / "g.txt", daemon.watched / "h.txt"
    content = b"an invoice"
    old.write_bytes(content)
    ours = _stamped(daemon, old)
    # A token for the same content from the same TSA, obtained by someone else.
    digest = hashlib.sha256(content).digest()
    reply = httpx.post(
        tsa.url,
        content=build_request(digest, "sha256").der,
        headers={"Content-Type": "application/timestamp-query"},
    )
    theirs = reply.content
    assert theirs != ours
    _tsr(new).write_bytes(theirs)
    old.rename(new)
    wait_for(lambda: len(_proofs_of(daemon, new)) == 2, 30, "the adopted proof", daemon)
    assert _tsr(new).read_bytes() == theirs  # kept, and recorded as a proof
    assert _archived(daemon, theirs)
    _verified(daemon, pki, new)
    wait_for(lambda: not _tsr(old).exists(), 30, "g.txt.tsr retired", daemon)
    assert _archived(daemon, ours)


def _rescan(daemon: RunningDaemon) -> dict[str, Any]:
    result = daemon.cli("rescan", "--json")
    assert result.returncode == 0, result.stderr
    reply: dict[str, Any] = json.loads(result.stdout)
    assert reply["waited"] is True
    return reply


def test_rescan_puts_back_a_sidecar_deleted_or_overwritten_by_hand(
    daemon: RunningDaemon, pki: Pki, tsa: FakeTsa
) -> None:
    deleted, overwritten, fine = (daemon.watched / n for n in ("del.txt", "ovr.txt", "ok.txt"))
    tokens = {}
    for path in (deleted, overwritten, fine):
        path.write_bytes(f"the content of {path.name}".encode())
        tokens[path] = _stamped(daemon, path)
    requests = tsa.requests
    _tsr(deleted).unlink()
    _tsr(overwritten).write_bytes(b"not a proof of anything")
    reply = _rescan(daemon)
    assert reply["sidecars"]["repaired"] == 2, reply
    assert reply["sidecars"]["written"] == 2
    [scan] = reply["scans"]
    assert (scan["root"], scan["files"]) == (str(daemon.watched), 3)
    for path in (deleted, overwritten, fine):
        assert _tsr(path).read_bytes() == tokens[path]
        _verified(daemon, pki, path)
    assert _archived(daemon, b"not a proof of anything")  # what was there: history
    assert tsa.requests == requests  # from the archive, not asked for again
    # Nothing left to repair: a second rescan says so.
    assert _rescan(daemon)["sidecars"]["repaired"] == 0
    text = daemon.cli("rescan")
    assert text.returncode == 0, text.stderr
    assert f"rescanned {daemon.watched}: 3 files in 1 directories" in text.stdout
    assert "sidecars: 0 repaired" in text.stdout


def test_rescan_retires_what_a_rename_over_another_file_left(
    daemon: RunningDaemon, pki: Pki
) -> None:
    moved, target = daemon.watched / "draft.txt", daemon.watched / "final.txt"
    moved.write_bytes(b"version 2 of the contract")
    target.write_bytes(b"version 1 of the contract")
    token, old_final = _stamped(daemon, moved), _stamped(daemon, target)
    moved.rename(target)  # final.txt gets a new version; draft.txt's row goes missing
    wait_for(
        lambda: _tsr(target).exists() and _tsr(target).read_bytes() == token,
        30,
        "final.txt.tsr holding the moved content's proof",
        daemon,
    )
    assert _archived(daemon, old_final)
    reply = _rescan(daemon)
    assert reply["sidecars"]["retired"] == 1, reply
    assert not _tsr(moved).exists()
    assert _archived(daemon, token)
    _verified(daemon, pki, target)


def test_rescan_no_wait_only_asks(daemon: RunningDaemon) -> None:
    result = daemon.cli("rescan", "--no-wait", "--json")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert (reply["waited"], reply["scans_requested"]) == (False, [str(daemon.watched)])
    assert "sidecars" not in reply
