"""Configurations that are valid TOML with valid settings, but name files that cannot serve:
what only reading the trust roots and the secrets finds. ``stampd config check`` and the start
of ``stampd run`` must refuse each with the same lines (tests/test_cli_config.py,
tests/test_run.py). The files are real: keys and certificates made with ``cryptography``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.tsa_pki import Pki

_PEM = serialization.Encoding.PEM
_KEY_HINT = (
    "a trust file must hold only the TSA's root certificate(s); remove the key, and rotate it"
    " if anyone else could read the file"
)
_DAMAGED_HINT = "replace the file with an intact copy of the root certificate(s)"


def _key_pem(pki: Pki) -> bytes:
    return pki.tsa_key.private_bytes(
        _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _trust(directory: Path, data: bytes) -> str:
    path = directory / "trust.pem"
    path.write_bytes(data)
    path.chmod(0o644)
    return f'trust = "{path}"\n'


def _secret(directory: Path, pki: Pki, data: bytes | None, mode: int = 0o600) -> str:
    path = directory / "tsa.secret"
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data)
        path.chmod(mode)
    return (
        _trust(directory, pki.root_pem.read_bytes()) + f'auth = "bearer"\nsecret_file = "{path}"\n'
    )


# name -> (write the TSA's extra keys into the directory, the expected lines with {dir}).
Case = tuple[Callable[[Path, Pki], str], list[str]]
CASES: dict[str, Case] = {
    "trust file holding only a private key": (
        lambda d, pki: _trust(d, _key_pem(pki)),
        [f"timestamp.tsa[0].trust: {{dir}}/trust.pem: holds a private key ({_KEY_HINT})"],
    ),
    "trust file holding a certificate and its key": (
        lambda d, pki: _trust(d, pki.root_pem.read_bytes() + _key_pem(pki)),
        [f"timestamp.tsa[0].trust: {{dir}}/trust.pem: holds a private key ({_KEY_HINT})"],
    ),
    "trust file holding only the TSA's leaf": (
        lambda d, pki: _trust(d, pki.tsa_pem.read_bytes()),
        [
            "timestamp.tsa[0].trust: {dir}/trust.pem: holds no CA certificate to trust (only a"
            " certificate that cannot sign others, like the TSA's own) (point it at the root"
            " certificate of the TSA's chain)"
        ],
    ),
    "damaged PEM certificate": (
        lambda d, pki: _trust(
            d, b"-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n"
        ),
        [
            "timestamp.tsa[0].trust: {dir}/trust.pem: certificate 1 of 1 is damaged (not a"
            f" valid X.509 certificate) ({_DAMAGED_HINT})"
        ],
    ),
    "random bytes as trust": (
        lambda d, pki: _trust(d, b"\x01" + os.urandom(200)),
        [
            "timestamp.tsa[0].trust: {dir}/trust.pem: not a PEM or DER certificate file (no"
            " -----BEGIN CERTIFICATE----- block) (give the PEM file of the TSA's root"
            " certificate(s))"
        ],
    ),
    "empty trust file": (
        lambda d, pki: _trust(d, b""),
        [
            "timestamp.tsa[0].trust: {dir}/trust.pem: is empty (give the PEM file of the TSA's"
            " root certificate(s))"
        ],
    ),
    "empty secret file": (
        lambda d, pki: _secret(d, pki, b"\n"),
        [
            'timestamp.tsa[0].secret_file: "{dir}/tsa.secret" is empty (write the secret into it)',
        ],
    ),
    "secret file that is not UTF-8": (
        lambda d, pki: _secret(d, pki, b"\xff\xfe token\n"),
        [
            'timestamp.tsa[0].secret_file: "{dir}/tsa.secret" is not UTF-8 text (write the'
            " secret as text, with nothing else)"
        ],
    ),
    "secret file that is too big": (
        lambda d, pki: _secret(d, pki, b"x" * (64 * 1024 + 1)),
        [
            'timestamp.tsa[0].secret_file: "{dir}/tsa.secret" is larger than 64 KiB, which is'
            " not a password or a token (point secret_file at the file holding only the secret)"
        ],
    ),
    "secret file that is a directory": (
        lambda d, pki: _secret(d, pki, None),
        ['timestamp.tsa[0].secret_file: "{dir}/tsa.secret" is not a regular file'],
    ),
    "a private key as trust and an empty secret": (
        lambda d, pki: _trust(d, _key_pem(pki)) + f'auth = "bearer"\nsecret_file = "{_empty(d)}"\n',
        [
            f"timestamp.tsa[0].trust: {{dir}}/trust.pem: holds a private key ({_KEY_HINT})",
            'timestamp.tsa[0].secret_file: "{dir}/empty.secret" is empty'
            " (write the secret into it)",
        ],
    ),
}

UNREADABLE_SECRET = [
    'timestamp.tsa[0].secret_file: "{dir}/tsa.secret" cannot be read (Permission denied)',
]


def _empty(directory: Path) -> Path:
    path = directory / "empty.secret"
    path.write_text("")
    path.chmod(0o600)
    return path


def write_config(directory: Path, tsa_extra: str) -> Path:
    """A configuration with one tsr watch and one TSA, plus ``tsa_extra`` in its table."""
    watched = directory / "watched"
    watched.mkdir(exist_ok=True)
    config = directory / "config.toml"
    config.write_text(
        "[daemon]\n"
        f'state_dir = "{directory / "state"}"\n'
        f'control_socket = "{directory / "control.sock"}"\n'
        'log_format = "json"\n'
        "[[watch]]\n"
        f'path = "{watched}"\n'
        'evidence = ["tsr"]\n'
        "[[timestamp.tsa]]\n"
        'name = "local"\n'
        'url = "http://127.0.0.1:9/tsa"\n' + tsa_extra
    )
    config.chmod(0o644)
    return config


def write_case(directory: Path, pki: Pki, name: str) -> tuple[Path, list[str]]:
    """The configuration of case ``name`` in ``directory``, and the problem lines expected."""
    write_extra, lines = CASES[name]
    config = write_config(directory, write_extra(directory, pki))
    return config, [line.replace("{dir}", str(directory)) for line in lines]


def expected_stderr(config: Path, lines: list[str]) -> list[str]:
    """What the CLI prints for these problems: one line each, naming the file once."""
    if len(lines) == 1:
        return [f"stampd: {config}: {lines[0]}"]
    return [f"stampd: {config}: {len(lines)} errors", *(f"  - {line}" for line in lines)]
