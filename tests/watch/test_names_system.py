"""Every name Linux allows gets its proof: `stampd run` on names that are not UTF-8.

File names are bytes. A Latin-1 name from an old Samba share, a name with a newline or a
backslash: each is recorded, stamped, gets its sidecar under its own bytes, and is shown in
the escaped form (store/files/pathnames.py) that the CLI takes back.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stampd.store.files.pathnames import escape
from tests.conftest import require_tool
from tests.daemon_harness import STAMPD, RunningDaemon, wait_for
from tests.fake_tsa import FakeTsa
from tests.tsa_pki import Pki, make_pki

NAMES = [b"caf\xe9.txt", b"line\nbreak.txt", b"back\\slash.txt", "München.txt".encode()]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Names")


@pytest.fixture
def tsa(pki: Pki) -> Iterator[FakeTsa]:
    with FakeTsa(pki) as server:
        yield server


def _path(directory: Path, raw: bytes) -> Path:
    return Path(os.fsdecode(os.fsencode(directory) + b"/" + raw))


def _complete_tsr(daemon: RunningDaemon) -> int:
    done = daemon.cli("status", "--json")
    summary = json.loads(done.stdout)["summary"] or {}
    return int(summary.get("proofs", {}).get("tsr", {}).get("complete", 0))


def test_names_that_are_not_utf8_are_recorded_stamped_and_shown_escaped(
    tmp_path: Path, pki: Pki, tsa: FakeTsa
) -> None:
    openssl = require_tool("openssl")
    daemon = RunningDaemon(
        tmp_path,
        quiet="0.2s",
        evidence='["tsr"]',
        extra=f'[[timestamp.tsa]]\nname = "local"\nurl = "{tsa.url}"\ntrust = "{pki.root_pem}"\n',
    )
    # One found by the start-up scan, the others by inotify while running.
    before = _path(daemon.watched, b"old-\xff.bin")
    before.write_bytes(b"there before the start")
    daemon.start()
    try:
        files = {_path(daemon.watched, raw): raw * 3 for raw in NAMES}
        for path, data in files.items():
            path.write_bytes(data)
        files[before] = b"there before the start"
        wait_for(lambda: _complete_tsr(daemon) == len(files), 60, "every file stamped", daemon)

        listed = json.loads(daemon.cli("ls", "--json").stdout)["files"]
        assert sorted(row["path"] for row in listed) == sorted(escape(p) for p in files)
        for row in listed:
            row["path"].encode("utf-8")  # valid UTF-8, never a surrogate
            assert row["proofs"] == {"tsr": "complete"}
        for path, data in files.items():
            sidecar = Path(os.fsdecode(os.fsencode(path) + b".tsr"))
            assert sidecar.is_file(), escape(sidecar)
            checked = subprocess.run(
                [
                    openssl,
                    "ts",
                    "-verify",
                    "-data",
                    os.fsencode(path),
                    "-in",
                    os.fsencode(sidecar),
                    "-CAfile",
                    str(pki.root_pem),
                ],
                capture_output=True,
                check=False,
            )
            assert checked.returncode == 0, checked.stderr
            assert path.read_bytes() == data  # the data file is never touched
            # The escaped name printed by `ls` is accepted back by `show` and `verify`.
            shown = daemon.cli("show", escape(path), "--json")
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout)["file"]["path"] == escape(path)
            verified = daemon.cli("verify", escape(path))
            assert verified.returncode == 0, verified.stdout + verified.stderr
            assert verified.stdout.startswith(f"{escape(path)}: tsr valid ")
        # `stamp` of an escaped name goes through the control socket and back.
        again = daemon.cli("stamp", escape(_path(daemon.watched, b"caf\xe9.txt")), "--json")
        assert again.returncode == 0, again.stderr
        [result] = json.loads(again.stdout)["results"]
        assert (result["outcome"], result["path"]) == (
            "unchanged",
            escape(_path(daemon.watched, b"caf\xe9.txt")),
        )
        text = subprocess.run(
            [STAMPD, "--config", str(daemon.config), "ls"], capture_output=True, check=True
        ).stdout
        assert b"caf\\351.txt" in text and b"line\\nbreak.txt" in text
    finally:
        assert daemon.stop() == 0
    refused = {"path_not_utf8", "scan_name_not_utf8"}
    assert not [e for e in daemon.events if e.get("event") in refused]
    assert not [e for e in daemon.events if e.get("event") == "raw"], "a log line was not JSON"
