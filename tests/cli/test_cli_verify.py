"""`stampd verify`: real tokens reach the outcome their README gives, and the exit code says it.

With `--tsr` and `--trust` no configuration is read at all (STAMPD_CONFIG points nowhere);
without `--tsr`, sidecars are found by the watch's layout.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from stampd.daemon.cli.app import cli
from stampd.store.files.sidecar import sidecar_path
from tests.conftest import shared_vectors


def _vector(name: str) -> Path:
    """A real TSA's file, read in place; the test skips in a lone clone (tests/conftest.py)."""
    return shared_vectors("tsr") / name


def _verify(tmp_path: Path, *args: str) -> Result:
    runner = CliRunner(env={"STAMPD_CONFIG": str(tmp_path / "no-such-config.toml")})
    return runner.invoke(cli, ["verify", *args])


def _given(tmp_path: Path, token: str, data: str | bytes, trust: str, *extra: str) -> Result:
    if isinstance(data, bytes):
        target = tmp_path / "data.bin"
        target.write_bytes(data)
    else:
        target = _vector(data)
    return _verify(
        tmp_path,
        "--tsr",
        str(_vector(token)),
        "--trust",
        str(_vector(trust)),
        *extra,
        str(target),
    )


@pytest.mark.parametrize(
    ("token", "data", "trust", "expected"),
    [
        (
            "globalsign-g4_2021_notation.resp.tsr",
            "data_notation.txt",
            "globalsign-root-r3.crt.pem",
            "tsr valid 2021-09-18T11:54:34Z Globalsign TSA for Advanced - G4",
        ),
        (
            "globalsign-g4_2021_notation.token.p7s",
            "data_notation.txt",
            "globalsign-root-r3.crt.pem",
            "tsr valid 2021-09-17T14:09:10Z Globalsign TSA for Advanced - G4",
        ),
        (
            "sigstage_2025_hello_sha384.resp.tsr",
            "data_hello.txt",
            "sigstage_ts_chain.pem",
            "tsr valid 2025-05-09T11:58:55Z sigstore-tsa",
        ),
    ],
)
def test_valid_tokens_exit_0(
    tmp_path: Path, token: str, data: str, trust: str, expected: str
) -> None:
    result = _given(tmp_path, token, data, trust)
    assert result.exit_code == 0, result.output
    assert expected in result.stdout
    assert "TSA chain valid until" in result.stdout


def test_expired_tsa_chain_is_valid_at_gen_time_and_says_renewal_is_overdue(
    tmp_path: Path,
) -> None:
    result = _given(tmp_path, "freetsa_2024_sha512.resp.tsr", b"test", "freetsa_cacert.pem")
    assert result.exit_code == 0, result.output
    assert "tsr valid 2024-04-09T05:29:39Z www.freetsa.org" in result.stdout
    assert "TSA chain expired 2026-03-11: renewal overdue" in result.stdout


@pytest.mark.parametrize(
    ("token", "data", "trust", "status", "reason"),
    [
        (
            "comodo-sectigo_2018_hello-nl_nocerts.resp.tsr",
            "data_hello-nl.txt",
            "globalsign-root-r3.crt.pem",
            "unverifiable",
            "signer_unavailable",
        ),
        (
            "globalsign_rejection.resp.tsr",
            "data_hello.txt",
            "freetsa_cacert.pem",
            "invalid",
            "rejected",
        ),
        (
            "globalsign-g4_2021_notation.resp.tsr",
            "data_hello.txt",
            "globalsign-root-r3.crt.pem",
            "invalid",
            "imprint_mismatch",
        ),
        (
            "globalsign-g4_2021_notation.resp.tsr",
            "data_notation.txt",
            "freetsa_cacert.pem",
            "invalid",
            "chain",
        ),
    ],
)
def test_unproven_exits_1_with_the_reason(
    tmp_path: Path, token: str, data: str, trust: str, status: str, reason: str
) -> None:
    result = _given(tmp_path, token, data, trust, "--json")
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["proven"] is False
    (evidence,) = document["files"][0]["evidence"]
    assert (evidence["status"], evidence["reason"]) == (status, reason)
    assert evidence["message"]


def test_base64_token_and_untrusted_signer_certificate(tmp_path: Path) -> None:
    # A FreeTSA token handed over as base64; the TSA certificate also given separately.
    armoured = tmp_path / "token.b64"
    armoured.write_bytes(base64.encodebytes(_vector("freetsa_2024_sha512.resp.tsr").read_bytes()))
    data = tmp_path / "test.txt"
    data.write_bytes(b"test")
    result = _verify(
        tmp_path,
        "--tsr",
        str(armoured),
        "--trust",
        str(_vector("freetsa_cacert.pem")),
        "--untrusted",
        str(_vector("freetsa_tsa.crt")),
        str(data),
    )
    assert result.exit_code == 0, result.output


def test_tsr_takes_exactly_one_path(tmp_path: Path) -> None:
    result = _verify(
        tmp_path,
        "--tsr",
        str(_vector("globalsign-g4_2021_notation.resp.tsr")),
        "--trust",
        str(_vector("globalsign-root-r3.crt.pem")),
        str(_vector("data_notation.txt")),
        str(_vector("data_hello.txt")),
    )
    assert result.exit_code == 2
    assert "exactly one PATH" in result.output


def test_without_trust_or_configuration_the_missing_config_is_named(tmp_path: Path) -> None:
    result = _verify(
        tmp_path,
        "--tsr",
        str(_vector("globalsign-g4_2021_notation.resp.tsr")),
        str(_vector("data_notation.txt")),
    )
    assert result.exit_code == 2
    assert "no-such-config.toml" in result.output


def _config_with_tsa(make_config: Callable[..., Path], tmp_path: Path, layout: str) -> Path:
    return make_config(
        f'sidecars = "{layout}"\n'
        "[[timestamp.tsa]]\n"
        'name = "globalsign"\n'
        'url = "http://127.0.0.1:9/"\n'
        f'trust = "{_vector("globalsign-root-r3.crt.pem")}"\n',
        evidence='["tsr"]',
    )


@pytest.mark.parametrize("layout", ["adjacent", "mirror"])
def test_sidecars_are_found_by_the_watch_layout(
    make_config: Callable[..., Path], tmp_path: Path, layout: str
) -> None:
    config = _config_with_tsa(make_config, tmp_path, layout)
    data = tmp_path / "watched" / "notation.txt"
    shutil.copyfile(_vector("data_notation.txt"), data)
    runner = CliRunner()
    missing = runner.invoke(cli, ["--config", str(config), "verify", str(data)])
    assert missing.exit_code == 1
    assert "no evidence found (looked for" in missing.stdout
    sidecar = sidecar_path(data, "tsr", layout=layout, state_dir=tmp_path / "state")  # type: ignore[arg-type]
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_vector("globalsign-g4_2021_notation.resp.tsr"), sidecar)
    found = runner.invoke(cli, ["--config", str(config), "verify", "--json", str(data)])
    assert found.exit_code == 0, found.output
    (evidence,) = json.loads(found.stdout)["files"][0]["evidence"]
    assert evidence["source"] == str(sidecar)
    assert evidence["status"] == "valid"
    data.write_bytes(b"changed since it was stamped")
    changed = runner.invoke(cli, ["--config", str(config), "verify", str(data)])
    assert changed.exit_code == 1
    assert "imprint_mismatch" in changed.stdout


def test_unreadable_data_file_is_one_error_line(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = _config_with_tsa(make_config, tmp_path, "adjacent")
    result = CliRunner().invoke(
        cli, ["--config", str(config), "verify", str(tmp_path / "watched" / "nope.txt")]
    )
    assert result.exit_code == 1
    assert "nope.txt" in result.stderr


def test_an_untrusted_tsa_root_says_which_tsa_which_roots_and_what_to_do(tmp_path: Path) -> None:
    result = _given(
        tmp_path,
        "globalsign-g4_2021_notation.resp.tsr",
        "data_notation.txt",
        "freetsa_cacert.pem",
    )
    assert result.exit_code == 1
    (line,) = result.stdout.splitlines()
    assert line == (
        f"{_vector('data_notation.txt')}: tsr invalid: chain: the TSA"
        ' "CN=Globalsign TSA for Advanced - G4, O=GlobalSign nv-sa" does not chain to a root in'
        f" the trust roots given (--trust {_vector('freetsa_cacert.pem')}); its chain leads up"
        ' to "CN=GlobalSign, OU=GlobalSign Root CA - R3, O=GlobalSign": give its root'
        " certificate with --trust ROOT.pem"
    )


def test_an_untrusted_root_names_the_configured_tsa_and_its_trust_file(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config(
        "[[timestamp.tsa]]\n"
        'name = "freetsa"\n'
        'url = "http://127.0.0.1:9/"\n'
        f'trust = "{_vector("freetsa_cacert.pem")}"\n',
        evidence='["tsr"]',
    )
    result = CliRunner().invoke(
        cli,
        [
            "verify",
            "--config",
            str(config),
            "--json",
            "--tsr",
            str(_vector("globalsign-g4_2021_notation.resp.tsr")),
            str(_vector("data_notation.txt")),
        ],
    )
    assert result.exit_code == 1, result.output
    (evidence,) = json.loads(result.stdout)["files"][0]["evidence"]
    assert evidence["reason"] == "chain"  # the stable code is unchanged
    assert evidence["message"].endswith(
        f'(timestamp.tsa[0] "freetsa": trust = {_vector("freetsa_cacert.pem")}); its chain leads'
        ' up to "CN=GlobalSign, OU=GlobalSign Root CA - R3, O=GlobalSign": add its root'
        " certificate to trust (or --trust ROOT.pem)"
    )


def test_a_token_without_certificates_suggests_untrusted(tmp_path: Path) -> None:
    token, data, trust = (
        "comodo-sectigo_2018_hello-nl_nocerts.resp.tsr",
        "data_hello-nl.txt",
        "globalsign-root-r3.crt.pem",
    )
    bare = _given(tmp_path, token, data, trust)
    assert bare.exit_code == 1
    assert bare.stdout.rstrip().endswith(
        "signature cannot be checked without it: give the TSA's certificate with"
        " --untrusted CERTS.pem"
    )
    wrong = _given(tmp_path, token, data, trust, "--untrusted", str(_vector("freetsa_tsa.crt")))
    assert wrong.exit_code == 1
    assert f"{_vector('freetsa_tsa.crt')} does not hold it either" in wrong.stdout


def test_a_missing_file_is_named_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = (
        "--tsr",
        str(_vector("freetsa_2024_sha512.resp.tsr")),
        "--trust",
        str(_vector("freetsa_cacert.pem")),
    )
    result = _verify(tmp_path, *args, "missing.txt")
    assert result.exit_code == 1
    assert result.stderr == "stampd: missing.txt: No such file or directory (check the path)\n"
    as_json = _verify(tmp_path, *args, "--json", "missing.txt")
    (entry,) = json.loads(as_json.stdout)["files"]
    assert entry["path"] == "missing.txt"
    assert entry["error"] == "No such file or directory (check the path)"


def test_the_verdict_names_the_configured_tsa_whose_roots_matched(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = make_config(
        "[[timestamp.tsa]]\n"
        'name = "freetsa"\n'
        'url = "http://127.0.0.1:9/"\n'
        f'trust = "{_vector("freetsa_cacert.pem")}"\n'
        "[[timestamp.tsa]]\n"
        'name = "globalsign"\n'
        'url = "http://127.0.0.1:9/"\n'
        f'trust = "{_vector("globalsign-root-r3.crt.pem")}"\n',
        evidence='["tsr"]',
    )
    token = str(_vector("globalsign-g4_2021_notation.resp.tsr"))
    data = str(_vector("data_notation.txt"))
    result = CliRunner().invoke(
        cli, ["--config", str(config), "verify", "--json", "--tsr", token, data]
    )
    assert result.exit_code == 0, result.output
    (evidence,) = json.loads(result.stdout)["files"][0]["evidence"]
    assert (evidence["status"], evidence["provider"]) == ("valid", "globalsign")
    # Roots given with --trust are no configured TSA's.
    given = _given(
        tmp_path,
        "globalsign-g4_2021_notation.resp.tsr",
        "data_notation.txt",
        "globalsign-root-r3.crt.pem",
        "--json",
    )
    (evidence,) = json.loads(given.stdout)["files"][0]["evidence"]
    assert (evidence["status"], evidence["provider"]) == ("valid", None)
    # Every key of before is still there, the serial as text.
    assert set(evidence) >= {
        "kind",
        "source",
        "status",
        "reason",
        "message",
        "gen_time",
        "authority",
        "algorithm",
        "serial",
        "policy",
        "chain_not_after",
        "renewal_overdue",
    }
    assert isinstance(evidence["serial"], str)


def test_an_unparsable_sidecar_keeps_every_key(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"data")
    token = tmp_path / "garbage.tsr"
    token.write_bytes(b"\x30\x03\x02\x01\x00")
    result = _verify(
        tmp_path,
        "--json",
        "--tsr",
        str(token),
        "--trust",
        str(_vector("freetsa_cacert.pem")),
        str(data),
    )
    assert result.exit_code == 1, result.output
    (evidence,) = json.loads(result.stdout)["files"][0]["evidence"]
    assert evidence["status"] == "invalid"
    assert {"serial", "policy", "algorithm", "provider"} <= set(evidence)
