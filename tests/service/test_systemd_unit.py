"""The files under systemd/: the service unit, sysusers.d and tmpfiles.d (reference §4).

`systemd-analyze verify` exits 0 for unknown keys and bad values and only warns on stderr, so
a unit passes here only with exit 0 *and* an empty stderr (reference §4.3). The ExecStart=
binary must exist on the host, so the unit is checked as a copy that runs the installed
console script instead of /usr/bin/stampd.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, require_tool

UNIT = REPO / "systemd" / "stampd.service"
SYSUSERS = REPO / "systemd" / "stampd.sysusers"
TMPFILES = REPO / "systemd" / "stampd.tmpfiles"
INSTALLED_BINARY = "/usr/bin/stampd"
CONSOLE_SCRIPT = Path(sys.executable).parent / "stampd"
MAX_EXPOSURE = 2.0


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as (key, value) pairs in file order (systemd.syntax(7))."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    logical = ""
    for raw in text.splitlines():
        line = logical + raw.strip()
        logical = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            logical = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"assignment outside a section: {line!r}"
        key, separator, value = line.partition("=")
        assert separator, f"not a KEY=VALUE line: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(sections: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [value for name, value in sections.get(section, []) if name == key]


def single(sections: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(sections, section, key)
    assert len(found) == 1, f"[{section}] {key}= is set {len(found)} times: {found}"
    return found[0]


def host_text() -> str:
    """The unit with ExecStart=/ExecReload= running the installed console script."""
    assert CONSOLE_SCRIPT.is_file(), f"{CONSOLE_SCRIPT} is missing: install the project first"
    text = UNIT.read_text()
    assert text.count(INSTALLED_BINARY) >= 2, (
        f"ExecStart=/ExecReload= no longer run {INSTALLED_BINARY}"
    )
    return text.replace(INSTALLED_BINARY, str(CONSOLE_SCRIPT))


def write_unit(directory: Path, text: str) -> Path:
    unit = directory / "stampd.service"
    unit.write_text(text)
    return unit


def verify(unit: Path) -> tuple[bool, str]:
    """Whether `systemd-analyze verify` accepts the unit without any warning, and its output."""
    analyze = require_tool("systemd-analyze")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)],
        cwd=unit.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = f"exit {result.returncode}\n{result.stdout}{result.stderr}"
    return result.returncode == 0 and result.stderr.strip() == "", output


def test_unit_verifies_without_warnings(tmp_path: Path) -> None:
    ok, output = verify(write_unit(tmp_path, host_text()))
    assert ok, output


MISTAKES: dict[str, Callable[[str], str]] = {
    "unknown key": lambda text: text.replace("[Service]\n", "[Service]\nBogusKey=1\n", 1),
    "bad value": lambda text: text.replace("ProtectSystem=strict", "ProtectSystem=bogus"),
    "trailing comment": lambda text: text.replace("UMask=0027", "UMask=0027  # private"),
    "missing binary": lambda text: text.replace(str(CONSOLE_SCRIPT), "/nonexistent/stampd", 1),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_verify_catches_mistakes(tmp_path: Path, mistake: str) -> None:
    """A check that cannot fail proves nothing: each of these mistakes must make verify() fail."""
    text = host_text()
    broken = MISTAKES[mistake](text)
    assert broken != text, f"the {mistake} edit no longer applies to the unit"
    ok, output = verify(write_unit(tmp_path, broken))
    assert not ok, f"systemd-analyze verify accepted a unit with a {mistake}:\n{output}"


def test_unit_security_exposure(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    unit = write_unit(tmp_path, host_text())

    def security(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [analyze, "security", "--offline=true", *options, str(unit)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    report = security("--threshold=20")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", report.stdout)
    assert match, f"no overall exposure in:\n{report.stdout}{report.stderr}"
    score = float(match.group(1))
    items = json.loads(security("--json=short").stdout)
    exposed = ", ".join(
        f"{item['name']} {item['exposure']}" for item in items if item["exposure"] not in (None, 0)
    )
    assert report.returncode == 0, f"exposure {score} fails --threshold=20 ({exposed})"
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE} ({exposed})"
    # The threshold is in tenths of the score: one tenth less must fail, so the exit code
    # above really measured this unit.
    stricter = security(f"--threshold={round(score * 10) - 1}")
    assert stricter.returncode != 0, f"exposure {score} passed a threshold below itself"


def test_unit_keeps_the_key_settings() -> None:
    unit = parse_unit(UNIT.read_text())
    assert single(unit, "Service", "Type") == "notify"
    assert single(unit, "Service", "NotifyAccess") == "main"
    watchdog = single(unit, "Service", "WatchdogSec")
    assert re.fullmatch(r"[1-9]\d*(s|min)?", watchdog), f"WatchdogSec={watchdog}"
    assert single(unit, "Service", "User") == "stampd"
    assert single(unit, "Service", "Group") == "stampd"
    assert single(unit, "Service", "RuntimeDirectory") == "stampd"
    assert single(unit, "Service", "StateDirectory") == "stampd"
    assert single(unit, "Service", "CapabilityBoundingSet") == ""

    config = ["--config", "/etc/stampd/config.toml"]
    start = shlex.split(single(unit, "Service", "ExecStart"))
    assert start == [INSTALLED_BINARY, *config, "run"]
    reload = shlex.split(single(unit, "Service", "ExecReload"))
    assert Path(reload[0]).name == "stampd", f"ExecReload= is not synchronous: {reload}"
    assert reload[1:] == [*config, "reload"]

    for paths in values(unit, "Service", "ReadWritePaths"):
        for path in paths.split():
            assert path.startswith("-/"), f"a missing {path} would fail the start; prefix '-'"


def test_unit_has_no_trailing_comments() -> None:
    """systemd keeps "# ..." after a value as part of the value."""
    for section, pairs in parse_unit(UNIT.read_text()).items():
        for key, value in pairs:
            assert "#" not in value, f"[{section}] {key}={value}"


def tmpfiles_entries() -> list[list[str]]:
    """The fields of each tmpfiles.d line: type, path, mode, user, group, age, argument."""
    entries = []
    for line in TMPFILES.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            entries.append(line.split())
    return entries


def test_credential_directory_comes_from_tmpfiles() -> None:
    """A missing LoadCredential= source fails the start, so tmpfiles must create it."""
    unit = parse_unit(UNIT.read_text())
    declared = {entry[1] for entry in tmpfiles_entries() if entry[0] == "d"}
    sources = [value.partition(":")[2] for value in values(unit, "Service", "LoadCredential")]
    assert sources, "no LoadCredential= in the unit"
    for source in sources:
        assert source in declared, f"LoadCredential= source {source} is not in {TMPFILES.name}"


@pytest.fixture
def offline_root(tmp_path: Path) -> Path:
    """An empty root directory with the stampd user and group from stampd.sysusers.

    `systemd-sysusers --root` works offline, but only if ROOT/etc exists (it takes the
    /etc/passwd lock there first).
    """
    sysusers = require_tool("systemd-sysusers")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = subprocess.run(
        [sysusers, f"--root={root}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return root


def database(path: Path) -> dict[str, list[str]]:
    """passwd(5) or group(5) lines by name."""
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines()}


def test_sysusers_creates_the_stampd_user_and_group(offline_root: Path) -> None:
    users = database(offline_root / "etc" / "passwd")
    groups = database(offline_root / "etc" / "group")
    assert "stampd" in users, users
    assert "stampd" in groups, groups
    _, _, uid, gid, _, home, shell = users["stampd"]
    assert int(uid) < 1000, f"stampd is not a system user (uid {uid})"
    assert gid == groups["stampd"][2]
    assert home == "/var/lib/stampd"
    assert Path(shell).name == "nologin"


def test_tmpfiles_creates_the_declared_directories(offline_root: Path) -> None:
    tmpfiles = require_tool("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("creating root-owned directories needs root (CI runs as root)")
    result = subprocess.run(
        [tmpfiles, f"--root={offline_root}", "--create", str(TMPFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    uids = {"root": 0} | {n: int(f[2]) for n, f in database(offline_root / "etc/passwd").items()}
    gids = {"root": 0} | {n: int(f[2]) for n, f in database(offline_root / "etc/group").items()}
    directories = [entry for entry in tmpfiles_entries() if entry[0] == "d"]
    assert "/etc/stampd/credentials" in [entry[1] for entry in directories]
    for _, path, mode, user, group, *_ in directories:
        created = (offline_root / path.lstrip("/")).lstat()
        assert stat.S_ISDIR(created.st_mode), path
        assert stat.S_IMODE(created.st_mode) == int(mode, 8), f"{path}: {created.st_mode:o}"
        assert (created.st_uid, created.st_gid) == (uids[user], gids[group]), path
