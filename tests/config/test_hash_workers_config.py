"""``daemon.hash_workers``: one worker process per usable CPU unless set; a bad value is an
error that names the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stampd.daemon.config.model import Config
from stampd.daemon.config.problems import ConfigError
from stampd.daemon.config.reader import config_to_dict, load_config, parse_config

REST = '[[watch]]\npath = "inbox"\nevidence = []\n'


def _load(tmp_path: Path, daemon: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(f"[daemon]\n{daemon}{REST}", encoding="utf-8")
    return load_config(path)


def test_unset_is_one_worker_per_cpu_this_process_may_use(tmp_path: Path) -> None:
    config = _load(tmp_path, "")
    assert config.daemon.hash_workers == len(os.sched_getaffinity(0))


def test_a_number_is_taken_and_round_trips(tmp_path: Path) -> None:
    config = _load(tmp_path, "hash_workers = 1\n")
    assert config.daemon.hash_workers == 1
    effective = config_to_dict(config)
    assert effective["daemon"]["hash_workers"] == 1
    assert parse_config(effective, source=config.source) == config


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0", "daemon.hash_workers: 0 must be from 1 to 256"),
        ("-2", "daemon.hash_workers: -2 must be from 1 to 256"),
        ("1000", "daemon.hash_workers: 1000 must be from 1 to 256"),
        ('"4"', 'daemon.hash_workers: "4" must be a whole number (like 2)'),
        ("true", "daemon.hash_workers: true must be a whole number (like 2)"),
        ("2.5", "daemon.hash_workers: 2.5 must be a whole number (like 2)"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_key(tmp_path: Path, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, f"hash_workers = {value}\n")
    assert problem in str(caught.value)
