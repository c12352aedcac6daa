"""Building the configured TSAs: trust roots and secrets are checked once, at start-up."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import httpx
import pytest

from stampd.daemon.config.model import TimestampConfig, TsaConfig
from stampd.daemon.config.problems import ConfigError
from stampd.daemon.evidence import tsa_setup as configured
from stampd.daemon.evidence.tsa_setup import configured_tsas, read_secret
from stampd.daemon.service.logs import configure_logging
from tests.tsa_pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Configured")


def _timestamp(*tsas: TsaConfig) -> TimestampConfig:
    return TimestampConfig(
        selection="priority", timeout=5.0, digest="sha256", mode="per-file", tsa=tsas
    )


def _tsa(pki: Pki, **changes: object) -> TsaConfig:
    fields: dict[str, object] = {
        "name": "local",
        "url": "http://127.0.0.1:9/tsa",
        "trust": pki.root_pem,
        "min_interval": 0.0,
    }
    fields.update(changes)
    return TsaConfig(**fields)  # type: ignore[arg-type]


def test_each_tsa_gets_its_own_roots(pki: Pki, tmp_path: Path) -> None:
    other = make_pki(tmp_path, "Elsewhere")
    config = _timestamp(_tsa(pki), _tsa(other, name="other"))
    tsas = configured_tsas(config, httpx.AsyncClient())
    assert [p.name for p in tsas.providers] == ["local", "other"]
    assert tsas.anchors["local"] == (pki.root_cert,)
    assert tsas.anchors["other"] == (other.root_cert,)


def test_a_trust_file_without_a_root_names_the_key(pki: Pki) -> None:
    # The TSA's own certificate is not a CA: a leaf is never a trust anchor.
    config = _timestamp(_tsa(pki), _tsa(pki, name="second", trust=pki.tsa_pem))
    with pytest.raises(ConfigError) as caught:
        configured_tsas(config, httpx.AsyncClient())
    assert caught.value.message.startswith("timestamp.tsa[1].trust: ")
    assert "root certificate" in str(caught.value)


def test_basic_and_bearer_secrets_come_from_their_files(pki: Pki, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    secret.chmod(0o600)
    config = _timestamp(
        _tsa(pki, auth="basic", username="stampd", secret_file=secret),
        _tsa(pki, name="bearer", auth="bearer", secret_file=secret),
    )
    basic, bearer = configured_tsas(config, httpx.AsyncClient()).providers
    assert basic._authorization == "Basic " + base64.b64encode(b"stampd:s3cr3t-value").decode()
    assert bearer._authorization == "Bearer s3cr3t-value"


def test_an_empty_secret_file_is_a_configuration_error(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("\n")
    with pytest.raises(ConfigError, match=r"^timestamp.tsa\[0\].secret_file: .* is empty"):
        read_secret(secret, "timestamp.tsa[0].secret_file")


def test_a_world_readable_secret_is_warned_about_without_showing_it(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("do-not-print-me\n")
    secret.chmod(0o644)
    out = io.StringIO()
    configure_logging(stream=out, environ={})
    assert read_secret(secret, "timestamp.tsa[0].secret_file") == "do-not-print-me"
    [event] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert event["event"] == "secret_file_world_readable"
    assert event["hint"] == f"chmod o-r {secret}"
    assert "do-not-print-me" not in out.getvalue()


def test_every_bad_tsa_is_reported_at_once(pki: Pki, tmp_path: Path) -> None:
    # A reload (SIGHUP, `stampd reload`) is refused with the whole list, as `run` is.
    empty = tmp_path / "empty.secret"
    empty.write_text("")
    config = _timestamp(
        _tsa(pki, trust=pki.tsa_key_pem),
        _tsa(pki, name="fine"),
        _tsa(pki, name="bearer", auth="bearer", secret_file=empty),
    )
    with pytest.raises(ConfigError) as caught:
        configured_tsas(config, httpx.AsyncClient())
    error = caught.value
    assert [(p.key, p.value) for p in error.problems] == [
        ("timestamp.tsa[0].trust", str(pki.tsa_key_pem)),
        ("timestamp.tsa[2].secret_file", str(empty)),
    ]
    assert error.message == "2 errors" + "".join(f"\n  - {line}" for line in error.lines)
    assert error.lines[0] == (
        f"timestamp.tsa[0].trust: {pki.tsa_key_pem}: holds a private key (a trust file must"
        " hold only the TSA's root certificate(s); remove the key, and rotate it if anyone"
        " else could read the file)"
    )


def test_an_unset_trust_names_the_system_bundle(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(configured, "SYSTEM_BUNDLE", pki.tsa_pem)  # a bundle without a CA
    with pytest.raises(ConfigError) as caught:
        configured_tsas(_timestamp(_tsa(pki, trust=None)), httpx.AsyncClient())
    (problem,) = caught.value.problems
    assert (problem.key, problem.value) == ("timestamp.tsa[0].trust", None)
    assert problem.problem.startswith("unset, so the system bundle is used: ")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe\n", "is not UTF-8 text"),
        (b"x" * (64 * 1024 + 1), "is larger than 64 KiB, which is not a password or a token"),
    ],
)
def test_a_secret_file_must_hold_a_short_text(tmp_path: Path, content: bytes, problem: str) -> None:
    secret = tmp_path / "token"
    secret.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        read_secret(secret, "timestamp.tsa[0].secret_file")
    assert caught.value.message == f'timestamp.tsa[0].secret_file: "{secret}" {problem}'


def test_a_secret_file_that_is_a_directory_or_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (tmp_path, fifo):  # a FIFO must not hang the start waiting for a writer
        with pytest.raises(ConfigError, match=r"is not a regular file"):
            read_secret(path, "timestamp.tsa[0].secret_file")
