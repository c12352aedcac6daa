"""`stampd config check`: the effective configuration, or one clear line and exit code 2."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import stampd.daemon.config.check  # noqa: F401  (imported before a test drops privileges)
from stampd.daemon.cli.app import cli
from stampd.daemon.config.reader import config_to_dict, load_config, parse_config
from tests.conftest import unprivileged
from tests.runtime_configs import (
    CASES,
    UNREADABLE_SECRET,
    expected_stderr,
    write_case,
    write_config,
)
from tests.tsa_pki import Pki, make_pki

# The TSA's roots sit next to the file (root.pem, written by _write), so the check passes on a
# machine without the system CA bundle too.
GOOD = """
[daemon]
state_dir = "state"
metrics = "127.0.0.1:9464"

[[watch]]
path = "inbox"
evidence = ["tsr"]

[[timestamp.tsa]]
name = "local"
url = "http://127.0.0.1:8318/tsa"
trust = "root.pem"
"""


def _invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Config check")


@pytest.fixture(autouse=True)
def _root_pem(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "root.pem").write_bytes(pki.root_pem.read_bytes())


def _write(directory: Path, text: str, name: str = "config.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def test_check_prints_the_effective_configuration(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD)
    (tmp_path / "inbox").mkdir()
    result = _invoke("--config", str(config), "config", "check")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"configuration OK: {config}\n"
    assert '[daemon]\nstate_dir = "' in result.stdout
    assert 'quiet = "2s"' in result.stdout  # defaults are shown too
    # The listing is TOML that reads back as the same configuration.
    assert parse_config(tomllib.loads(result.stdout), source=config) == load_config(config)


def test_check_json_is_one_document(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD)
    result = _invoke("--config", str(config), "config", "check", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "config": str(config),
        "ok": True,
        "effective": config_to_dict(load_config(config)),
    }
    assert result.stderr.endswith(f"configuration OK: {config}\n")


def test_a_missing_watch_directory_is_a_warning(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD)
    result = _invoke("--config", str(config), "config", "check")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        f"warning: watch[0].path: {tmp_path / 'inbox'} is not a directory (yet)",
        f"configuration OK: {config}",
    ]


def test_ots_without_a_header_source_is_a_warning_and_with_one_is_not(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    ots = GOOD.replace('evidence = ["tsr"]', 'evidence = ["tsr", "ots"]')
    result = _invoke("--config", str(_write(tmp_path, ots)), "config", "check")
    assert result.exit_code == 0, result.output
    [warning, ok] = result.stderr.splitlines()
    assert warning.startswith("warning: anchor.bitcoin: not set: the Bitcoin attestations")
    assert "set [anchor.bitcoin] to a bitcoind JSON-RPC URL" in warning and ok.startswith("config")
    (tmp_path / "cookie").write_text("__cookie__:x\n")
    node = '[anchor.bitcoin]\nurl = "http://127.0.0.1:8332/"\ncookie_file = "cookie"\n'
    result = _invoke("--config", str(_write(tmp_path, ots + node)), "config", "check")
    assert result.exit_code == 0, result.output
    assert result.stderr == f"configuration OK: {tmp_path / 'config.toml'}\n"


def test_the_file_argument_overrides_config_option(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD)
    result = _invoke("--config", str(tmp_path / "absent.toml"), "config", "check", str(config))
    assert result.exit_code == 0, result.output
    assert result.stderr.endswith(f"configuration OK: {config}\n")


def test_stampd_config_environment_variable(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD)
    result = _invoke("config", "check", env={"STAMPD_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    assert result.stderr.endswith(f"configuration OK: {config}\n")


def test_a_bad_file_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD.replace('evidence = ["tsr"]', 'quiet = "2x"'))
    result = _invoke("--config", str(config), "config", "check")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f'stampd: {config}: watch[0].quiet: "2x" is not a duration (try "2s")'
    ]


def test_a_bad_file_under_json_is_still_one_document(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD.replace("[[watch]]", "[[watches]]"))
    result = _invoke("config", "check", "--json", str(config))
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "config": str(config),
        "ok": False,
        "problems": [
            {
                "key": "watches",
                "value": None,
                "problem": 'unknown section (did you mean "watch"?)',
                "hint": "valid sections: daemon, watch, timestamp, anchor",
            },
            {
                "key": "watch",
                "value": None,
                "problem": 'none configured (add a [[watch]] with path = "/srv/records")',
                "hint": None,
            },
        ],
    }
    assert result.stderr.splitlines() == [
        f"stampd: {config}: 2 errors",
        '  - watches: unknown section (did you mean "watch"?)'
        " (valid sections: daemon, watch, timestamp, anchor)",
        '  - watch: none configured (add a [[watch]] with path = "/srv/records")',
    ]


def test_other_commands_carry_the_problems_in_their_json_error(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD.replace('evidence = ["tsr"]', 'quiet = "2x"'))
    result = _invoke("--config", str(config), "ls", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "error": {
            "error_class": "config",
            "message": f'{config}: watch[0].quiet: "2x" is not a duration (try "2s")',
            "problems": [
                {
                    "key": "watch[0].quiet",
                    "value": "2x",
                    "problem": '"2x" is not a duration (try "2s")',
                    "hint": None,
                }
            ],
        }
    }


def test_a_missing_file(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    result = _invoke("--config", str(absent), "config", "check", "--json")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert (document["config"], document["ok"]) == (str(absent), False)
    (problem,) = document["problems"]
    assert (problem["key"], problem["value"]) == (None, None)
    assert problem["problem"] == "no such configuration file"
    assert "--config" in problem["hint"]
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"stampd: {absent}: no such configuration file (create it from")


def test_a_toml_syntax_error(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD + "oops\n")
    result = _invoke("config", "check", str(config))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"stampd: {config}: invalid TOML: Expected '=' after a key in a key/value pair"
        " (at line 14, column 5)"
    ]


# --- what only reading the TSAs' files finds: checked here as `stampd run` would ------------

# What cryptography's parsers say when they fail; none of it may reach the operator.
RAW_LIBRARY_TEXT = ("ParseError", "asn1", "UnexpectedTag", "ShortData", "InvalidLength", "Tag {")


@pytest.mark.parametrize("case", CASES)
def test_check_reads_the_trust_and_secret_files(tmp_path: Path, pki: Pki, case: str) -> None:
    config, lines = write_case(tmp_path, pki, case)
    result = _invoke("--config", str(config), "config", "check")
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == expected_stderr(config, lines)
    assert not any(text in result.stderr for text in RAW_LIBRARY_TEXT)


@pytest.mark.parametrize("case", CASES)
def test_check_json_lists_each_runtime_problem(tmp_path: Path, pki: Pki, case: str) -> None:
    config, lines = write_case(tmp_path, pki, case)
    result = _invoke("--config", str(config), "config", "check", "--json")
    assert result.exit_code == 2, result.output
    document = json.loads(result.stdout)
    assert (document["config"], document["ok"]) == (str(config), False)
    problems = document["problems"]
    assert [set(problem) for problem in problems] == [{"key", "value", "problem", "hint"}] * len(
        lines
    )
    assert [line.split(": ", 1)[0] for line in lines] == [p["key"] for p in problems]
    for problem, line in zip(problems, lines, strict=True):
        # The value is the path as configured; never the content of a secret.
        assert problem["value"] is not None and problem["value"].startswith(str(tmp_path))
        assert line.startswith(f"{problem['key']}: {problem['problem']}")
    assert not any(text in result.stdout for text in RAW_LIBRARY_TEXT)
    assert result.stderr.splitlines() == expected_stderr(config, lines)


def test_an_unreadable_secret_file(shared_tmp: Path, pki: Pki) -> None:
    (shared_tmp / "root.pem").write_bytes(pki.root_pem.read_bytes())
    (shared_tmp / "root.pem").chmod(0o644)
    secret = shared_tmp / "tsa.secret"
    secret.write_text("token\n")
    secret.chmod(0)
    config = write_config(
        shared_tmp,
        f'trust = "{shared_tmp / "root.pem"}"\nauth = "bearer"\nsecret_file = "{secret}"\n',
    )
    with unprivileged():
        result = _invoke("--config", str(config), "config", "check", "--json")
    assert result.exit_code == 2, result.output
    lines = [line.replace("{dir}", str(shared_tmp)) for line in UNREADABLE_SECRET]
    assert result.stderr.splitlines() == expected_stderr(config, lines)
    (problem,) = json.loads(result.stdout)["problems"]
    assert (problem["key"], problem["value"]) == ("timestamp.tsa[0].secret_file", str(secret))


def test_every_tsa_is_checked_and_a_shared_trust_file_reported_for_each(
    tmp_path: Path, pki: Pki
) -> None:
    # Every configured TSA, whether or not a watch uses tsr: `stampd verify` trusts their roots.
    key = tmp_path / "key.pem"
    key.write_bytes(pki.tsa_key_pem.read_bytes())
    tsa = '[[timestamp.tsa]]\nname = "{name}"\nurl = "http://127.0.0.1:9/"\ntrust = "key.pem"\n'
    config = _write(
        tmp_path,
        '[[watch]]\npath = "inbox"\nevidence = []\n'
        + tsa.format(name="one")
        + tsa.format(name="two"),
    )
    result = _invoke("config", "check", "--json", str(config))
    assert result.exit_code == 2
    problems = json.loads(result.stdout)["problems"]
    assert [(p["key"], p["value"]) for p in problems] == [
        ("timestamp.tsa[0].trust", str(key)),
        ("timestamp.tsa[1].trust", str(key)),
    ]
    assert {p["problem"] for p in problems} == {f"{key}: holds a private key"}


def test_settings_and_files_are_reported_in_one_pass(tmp_path: Path, pki: Pki) -> None:
    config, lines = write_case(tmp_path, pki, "trust file holding only a private key")
    config.write_text(config.read_text().replace("[[watch]]\n", '[[watch]]\nquiet = "2x"\n'))
    result = _invoke("--config", str(config), "config", "check")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == expected_stderr(
        config, ['watch[0].quiet: "2x" is not a duration (try "2s")', *lines]
    )


def test_a_world_readable_secret_is_a_warning_naming_the_key(tmp_path: Path) -> None:
    secret = tmp_path / "tsa.secret"
    secret.write_text("do-not-print-me\n")
    secret.chmod(0o644)
    (tmp_path / "inbox").mkdir()
    config = _write(tmp_path, GOOD + f'auth = "bearer"\nsecret_file = "{secret}"\n')
    result = _invoke("--config", str(config), "config", "check")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: timestamp.tsa[0].secret_file: {secret} is readable by every user"
        f" (chmod o-r {secret})",
        f"configuration OK: {config}",
    ]
    assert "do-not-print-me" not in result.output


def test_an_inventory_only_watch_needs_no_tsa(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    config = _write(tmp_path, '[[watch]]\npath = "inbox"\nevidence = []\n')
    result = _invoke("config", "check", "--json", str(config))
    assert result.exit_code == 0, result.output
    effective = json.loads(result.stdout)["effective"]
    assert effective["watch"][0]["evidence"] == []
    assert effective["timestamp"]["tsa"] == []


@pytest.mark.parametrize(
    ("setting", "key", "value", "planned"),
    [
        ('evidence = ["p7s"]', "watch[0].evidence[0]", "p7s", "CAdES seals"),
        ('evidence = ["attest"]', "watch[0].evidence[0]", "attest", "attestation service"),
        ('[timestamp]\nmode = "batch"', "timestamp.mode", "batch", "one TSA token"),
    ],
)
def test_what_is_planned_is_refused_as_not_available_yet(
    tmp_path: Path, setting: str, key: str, value: str, planned: str
) -> None:
    config = _write(tmp_path, GOOD.replace('evidence = ["tsr"]', setting))
    result = _invoke("config", "check", "--json", str(config))
    assert result.exit_code == 2
    (problem,) = json.loads(result.stdout)["problems"]
    assert (problem["key"], problem["value"]) == (key, value)
    assert problem["problem"].startswith(f'"{value}" is not available yet (planned: ')
    assert planned in problem["problem"]
    assert result.stderr.startswith(f"stampd: {config}: {key}: ")
