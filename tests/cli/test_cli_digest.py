"""`stampd digest`: byte-for-byte what sha256sum/sha512sum print, --json, stdin, errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from stampd.daemon.cli import digest as digest_cli
from stampd.daemon.cli.app import cli
from stampd.daemon.cli.exit_codes import ExitCode
from tests.conftest import require_tool


def coreutils_escapes_carriage_return() -> bool:
    """coreutils 9.0 started escaping \\r in names; older ones print it raw."""
    sha256sum = require_tool("sha256sum")
    version = subprocess.run([sha256sum, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"(\d+)\.\d+", version)
    return found is not None and int(found.group(1)) >= 9


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Files with awkward names, as relative names (the working directory is tmp_path)."""
    names = [
        "plain.txt",
        "with space",
        "back\\slash",
        "new\nline",
        "both\\and\nboth",
        os.fsdecode(b"latin1-caf\xe9"),
        "empty",
        "large.bin",
    ]
    if coreutils_escapes_carriage_return():
        names.append("carriage\rreturn")
    for number, name in enumerate(names):
        size = {"empty": 0, "large.bin": 3 * (1 << 20) + 7}.get(name, number * 1000 + 1)
        (tmp_path / name).write_bytes(os.urandom(size))
    monkeypatch.chdir(tmp_path)
    return names


def invoke(*args: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(cli, ["digest", *args], input=stdin)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout_bytes, result.stderr


@pytest.mark.parametrize("algo", ["sha256", "sha512"])
def test_output_is_byte_for_byte_coreutils(tree: list[str], algo: str) -> None:
    tool = require_tool(f"{algo}sum")
    want = subprocess.run([tool, "--", *tree], capture_output=True, check=True).stdout

    code, out, err = invoke("--algo", algo, *tree)

    assert (code, err) == (0, "")
    assert out == want
    args = () if algo == "sha256" else ("--algo", algo)
    assert invoke(*args, *tree)[1] == want  # sha256 is the default


def test_coreutils_check_accepts_the_output(tree: list[str]) -> None:
    for algo in ("sha256", "sha512"):
        tool = require_tool(f"{algo}sum")
        out = invoke("--algo", algo, *tree)[1]
        check = subprocess.run([tool, "-c", "--strict"], input=out, capture_output=True)
        assert check.returncode == 0, check.stderr
        assert check.stdout.count(b": OK\n") == len(tree)


def test_stdin_is_dash() -> None:
    data = os.urandom(100_000)
    code, out, _err = invoke("-", stdin=data)
    assert code == 0
    assert out == f"{hashlib.sha256(data).hexdigest()}  -\n".encode()

    sha256sum = require_tool("sha256sum")
    assert out == subprocess.run([sha256sum, "-"], input=data, capture_output=True).stdout


def test_json_is_one_document_with_both_digests_and_errors(tree: list[str]) -> None:
    result = CliRunner().invoke(cli, ["digest", "--json", "plain.txt", "missing", "-"], input=b"")

    assert result.exit_code == ExitCode.FAILURE
    document = json.loads(result.stdout)  # exactly one document: json.loads rejects trailing data
    data = Path("plain.txt").read_bytes()
    assert document["files"] == [
        {
            "path": "plain.txt",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "sha512": hashlib.sha512(data).hexdigest(),
        },
        {
            "path": "-",
            "size": 0,
            "sha256": hashlib.sha256(b"").hexdigest(),
            "sha512": hashlib.sha512(b"").hexdigest(),
        },
    ]
    [error] = document["errors"]
    assert error["path"] == "missing"
    assert error["error_class"] == "io"
    assert error["message"] == "missing: No such file or directory"
    assert result.stderr.startswith("stampd: missing: No such file or directory")


def test_json_shows_undecodable_names_readably(tree: list[str]) -> None:
    name = os.fsdecode(b"latin1-caf\xe9")
    result = CliRunner().invoke(cli, ["digest", "--json", name])
    assert result.exit_code == 0
    # The escaped form every stampd command prints (ls -b style, store/files/pathnames.py).
    assert json.loads(result.stdout)["files"][0]["path"] == "latin1-caf\\351"


def test_failures_are_reported_and_the_rest_still_printed(tree: list[str]) -> None:
    sha256sum = require_tool("sha256sum")
    want = subprocess.run([sha256sum, "plain.txt", "empty"], capture_output=True).stdout

    code, out, err = invoke("plain.txt", "missing", "empty")

    assert code == ExitCode.FAILURE
    assert out == want
    assert err.splitlines() == ["stampd: missing: No such file or directory (check the path)"]


def test_an_error_is_one_line_whatever_the_name(tree: list[str]) -> None:
    code, out, err = invoke("gone\nmissing", os.fsdecode(b"gone\xff"))
    assert (code, out) == (ExitCode.FAILURE, b"")
    assert err.splitlines() == [
        "stampd: gone\\nmissing: No such file or directory (check the path)",
        "stampd: gone\\377: No such file or directory (check the path)",
    ]


def test_a_directory_is_an_error(tmp_path: Path, tree: list[str]) -> None:
    Path("subdir").mkdir()
    code, out, err = invoke("subdir", "plain.txt")
    assert code == ExitCode.FAILURE
    assert out.endswith(b"  plain.txt\n")
    [line] = err.splitlines()
    assert line.startswith("stampd: subdir: Is a directory")


def test_a_path_is_required() -> None:
    result = CliRunner().invoke(cli, ["digest"])
    assert result.exit_code == ExitCode.USAGE
    assert "PATH" in result.stderr


def test_progress_goes_to_stderr_only(tree: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal a large file gets a progress bar; stdout stays exactly the checksum."""
    monkeypatch.setattr(digest_cli, "_stderr_is_terminal", lambda: True)
    monkeypatch.setattr(digest_cli, "PROGRESS_MIN_BYTES", 1 << 20)
    sha256sum = require_tool("sha256sum")
    want = subprocess.run([sha256sum, "large.bin", "plain.txt"], capture_output=True).stdout

    code, out, err = invoke("large.bin", "plain.txt")

    assert code == 0
    assert out == want
    assert "large.bin" in err
    assert "plain.txt" not in err  # small files get no bar


@pytest.mark.parametrize(
    ("args", "computed"),
    [
        ((), {"sha256"}),
        (("--algo", "sha512"), {"sha512"}),
        (("--json",), {"sha256", "sha512"}),
    ],
)
def test_only_the_digest_printed_is_computed(
    tree: list[str], monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], computed: set[str]
) -> None:
    """SHA-256 alone costs half of both: the single pass over both is for --json only."""
    made: list[str] = []
    real_new, real_sha256, real_sha512 = hashlib.new, hashlib.sha256, hashlib.sha512

    def new(name: str, *rest: bytes) -> object:
        made.append(name)
        return real_new(name, *rest)

    monkeypatch.setattr(hashlib, "new", new)
    monkeypatch.setattr(hashlib, "sha256", lambda *a: made.append("sha256") or real_sha256(*a))
    monkeypatch.setattr(hashlib, "sha512", lambda *a: made.append("sha512") or real_sha512(*a))
    code, _out, _err = invoke(*args, "large.bin", "plain.txt")
    assert code == 0
    assert set(made) == computed


def test_digest_starts_without_the_modules_of_other_commands(tmp_path: Path) -> None:
    """Start-up is part of a digest's time: the index, asyncio, X.509, the config reader and
    structlog belong to other commands and are not imported (COMMANDS in cli/app.py)."""
    path = tmp_path / "data"
    path.write_bytes(b"data")
    code = (
        "import sys\n"
        "from stampd.daemon.cli import main\n"
        "sys.argv = ['stampd', 'digest', sys.argv[1]]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert run.stdout == f"{hashlib.sha256(b'data').hexdigest()}  {path}\n"
    loaded = set(run.stderr.split())
    for heavy in ("asyncio", "sqlite3", "cryptography", "structlog", "stampd.daemon.config.model"):
        assert heavy not in loaded
