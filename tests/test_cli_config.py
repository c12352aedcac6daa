"""`stampd config check`: the effective configuration, or one clear line and exit code 2."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from click.testing import CliRunner, Result

from stampd.daemon.cli.app import cli
from stampd.daemon.config import config_to_dict, load_config, parse_config

GOOD = """
[daemon]
state_dir = "state"
metrics = "127.0.0.1:9464"

[[watch]]
path = "inbox"
evidence = ["tsr", "ots"]

[[timestamp.tsa]]
name = "local"
url = "http://127.0.0.1:8318/tsa"
"""


def _invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


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
    config = _write(tmp_path, GOOD.replace('evidence = ["tsr", "ots"]', 'quiet = "2x"'))
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
        "error": {
            "error_class": "config",
            "message": f"{config}: 2 errors\n"
            '  - watches: unknown section (did you mean "watch"?)'
            " (valid sections: daemon, watch, timestamp)\n"
            '  - watch: none configured (add a [[watch]] with path = "/srv/records")',
        }
    }


def test_a_missing_file(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    result = _invoke("--config", str(absent), "config", "check", "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["message"] == f"{absent}: no such configuration file"
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"stampd: {absent}: no such configuration file (create it from")


def test_a_toml_syntax_error(tmp_path: Path) -> None:
    config = _write(tmp_path, GOOD + "oops\n")
    result = _invoke("config", "check", str(config))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"stampd: {config}: invalid TOML: Expected '=' after a key in a key/value pair"
        " (at line 13, column 5)"
    ]
