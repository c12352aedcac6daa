"""DESIGN rule 7: secrets never leave their files. Plant secrets in credential files, secret
files and the configuration, make stampd use them and fail with them, then search every log
line, every CLI output and every error message for them."""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import RunningDaemon, wait_for
from tests.fake_tsa import FakeTsa
from tests.tsa_pki import Pki, make_pki

BASIC = "basic-PLANTED-7f1c0e"
BEARER = "bearer-PLANTED-91ab44"
IN_URL = "urlpass-PLANTED-c0de55"
IN_QUERY = "query-PLANTED-d00d66"
PLANTED = (BASIC, BEARER, IN_URL, IN_QUERY, base64.b64encode(f"stampd:{BASIC}".encode()).decode())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), "Secrets")


@pytest.fixture
def tsas(pki: Pki) -> Iterator[tuple[FakeTsa, FakeTsa]]:
    with FakeTsa(pki, mode="status_401") as refusing, FakeTsa(pki) as working:
        yield refusing, working


def _leaks(text: str) -> list[str]:
    return [secret for secret in PLANTED if secret in text]


def test_planted_secrets_appear_nowhere(
    tmp_path: Path, pki: Pki, tsas: tuple[FakeTsa, FakeTsa]
) -> None:
    refusing, working = tsas
    credentials = tmp_path / "credentials"  # what systemd's LoadCredential= makes
    credentials.mkdir(mode=0o700)
    (credentials / "tsa_refusing").write_text(BASIC + "\n")
    (credentials / "tsa_refusing").chmod(0o400)
    bearer = tmp_path / "bearer.secret"
    bearer.write_text(BEARER + "\n")
    bearer.chmod(0o644)  # world-readable: warned about, by name only
    timestamp = (
        '[timestamp]\nselection = "priority"\ntimeout = "2s"\n'
        '[[timestamp.tsa]]\nname = "refusing"\n'
        f'url = "{refusing.url}?api_key={IN_QUERY}"\ntrust = "{pki.root_pem}"\n'
        'auth = "basic"\nusername = "stampd"\n'
        'secret_file = "$CREDENTIALS_DIRECTORY/tsa_refusing"\n'
        '[[timestamp.tsa]]\nname = "working"\n'
        f'url = "{working.url}"\ntrust = "{pki.root_pem}"\n'
        f'auth = "bearer"\nsecret_file = "{bearer}"\n'
    )
    daemon = RunningDaemon(
        tmp_path,
        evidence='["tsr"]',
        extra=timestamp,
        env={"CREDENTIALS_DIRECTORY": str(credentials)},
    ).start()
    outputs: list[str] = []
    record = daemon.watched / "contract.pdf"
    try:
        record.write_bytes(b"signed contract\n")
        wait_for(lambda: record.with_name("contract.pdf.tsr").exists(), 20, "the .tsr")
        # The secrets were really used: each TSA saw its own credentials.
        assert refusing.authorizations[0] == "Basic " + PLANTED[-1]
        assert working.authorizations[0] == f"Bearer {BEARER}"

        env = {"CREDENTIALS_DIRECTORY": str(credentials)}
        for args in (
            ("status", "--json"),
            ("status",),
            ("providers", "--json"),
            ("providers",),
            ("show", str(record), "--json"),
            ("config", "check"),
            ("config", "check", "--json"),
        ):
            result = daemon.cli(*args, env=env)
            assert result.returncode == 0, (args, result.stderr)
            outputs += [result.stdout, result.stderr]

        # Error messages: a password in a TSA URL, refused by the CLI and by the daemon.
        good = daemon.config.read_text()
        daemon.config.write_text(
            good.replace(working.url, working.url.replace("//", f"//user:{IN_URL}@"))
        )
        for args in (("reload",), ("config", "check"), ("reload", "--json")):
            result = daemon.cli(*args, env=env)
            assert result.returncode == 2, (args, result.stdout, result.stderr)
            assert "must not contain a password" in result.stderr
            outputs += [result.stdout, result.stderr]
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_event("reload_refused")
        # An unreadable credential on reload: refused, named by key and path only.
        daemon.config.write_text(good.replace("tsa_refusing", "tsa_missing"))
        result = daemon.cli("reload", env=env)
        assert result.returncode == 2
        assert "timestamp.tsa[0].secret_file" in result.stderr
        outputs += [result.stdout, result.stderr]
    finally:
        assert daemon.stop() == 0
    log = "\n".join(json.dumps(event) for event in daemon.events)
    assert daemon.count("secret_file_world_readable") >= 1
    assert any(e.get("error_class") == "auth" for e in daemon.events if "provider" in e)
    assert _leaks(log) == [], [e for e in daemon.events if _leaks(json.dumps(e))][:3]
    for output in outputs:
        assert _leaks(output) == [], output
