"""A watch's ``evidence`` list is checked against the registry of kinds (store/kinds.py).

A kind becomes acceptable by its registry entry alone: these tests register kinds of their own
and parse real TOML through the reader, with no change to the configuration code.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from stampd.daemon.config.problems import ConfigError
from stampd.daemon.config.reader import parse_config
from stampd.store import kinds
from stampd.store.kinds import JobAction, KindSpec

SOURCE = Path("/etc/stampd/config.toml")
TSA = '[[timestamp.tsa]]\nname = "local"\nurl = "http://127.0.0.1:8318/tsa"\n'


def _kind(name: str, title: str, *, available: bool, watchable: bool = True) -> KindSpec:
    return KindSpec(
        name,
        title,
        sidecar=name,
        actions=frozenset({JobAction.OBTAIN}),
        config_section=None,
        available=available,
        watchable=watchable,
    )


def _evidence(*names: str) -> str:
    listed = ", ".join(f'"{name}"' for name in names)
    return f'[[watch]]\npath = "/srv/records"\nevidence = [{listed}]\n' + TSA


def _problems(text: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), source=SOURCE)
    return caught.value.lines


def test_a_registered_available_kind_is_accepted() -> None:
    with kinds.registered(_kind("fake", "test proofs", available=True)):
        config = parse_config(tomllib.loads(_evidence("tsr", "fake")), source=SOURCE)
    assert config.watches[0].evidence == ("tsr", "fake")


def test_the_registry_is_read_at_each_parse_not_at_import() -> None:
    with kinds.registered(_kind("fake", "test proofs", available=True)):
        pass
    assert _problems(_evidence("fake")) == (
        'watch[0].evidence[0]: "fake" is not an evidence kind (available: "tsr", "ots";'
        ' planned: "p7s", "attest")',
    )


def test_messages_list_the_registered_kinds() -> None:
    with kinds.registered(_kind("fake", "test proofs", available=True)):
        lines = _problems(_evidence("p7s", "zzz"))
    assert lines == (
        'watch[0].evidence[0]: "p7s" is not available yet (planned: CAdES seals);'
        ' available: "tsr", "ots", "fake"',
        'watch[0].evidence[1]: "zzz" is not an evidence kind (available: "tsr", "ots", "fake";'
        ' planned: "p7s", "attest")',
    )


def test_a_registered_planned_kind_is_not_available_yet_with_its_title() -> None:
    with kinds.registered(_kind("future", "proofs from the future", available=False)):
        lines = _problems(_evidence("future", "zzz"))
    assert lines == (
        'watch[0].evidence[0]: "future" is not available yet (planned: proofs from the future);'
        ' available: "tsr", "ots"',
        'watch[0].evidence[1]: "zzz" is not an evidence kind (available: "tsr", "ots";'
        ' planned: "p7s", "attest", "future")',
    )


def test_a_kind_a_watch_cannot_ask_for_is_not_an_evidence_kind() -> None:
    # Like ers, which renewal makes: neither accepted nor offered, even when available.
    with kinds.registered(_kind("derived", "derived proofs", available=True, watchable=False)):
        lines = _problems(_evidence("derived"))
    assert lines == (
        'watch[0].evidence[0]: "derived" is not an evidence kind (available: "tsr", "ots";'
        ' planned: "p7s", "attest")',
    )
