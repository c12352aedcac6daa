"""The TSAs of ``[[timestamp.tsa]]`` as live providers: roots loaded, secrets read.

Done once at start-up, so that a trust file without a root or an unreadable secret stops the
daemon with a message naming the key (DESIGN rule 2: only bad configuration stops it) rather
than failing every job later.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509

from stampd.daemon.config import ConfigError, TimestampConfig, TsaConfig
from stampd.daemon.logs import get_logger
from stampd.daemon.providers.rfc3161 import Rfc3161Provider
from stampd.store.trust import SYSTEM_BUNDLE, TrustError, load_anchors

log = get_logger("stampd.providers")

#: A secret file larger than this is not a password or a token.
MAX_SECRET_BYTES = 64 * 1024


@dataclass(frozen=True)
class ConfiguredTsas:
    """The providers in configuration order, and each one's trust anchors by name."""

    providers: tuple[Rfc3161Provider, ...]
    anchors: dict[str, tuple[x509.Certificate, ...]]


def configured_tsas(timestamp: TimestampConfig, client: httpx.AsyncClient) -> ConfiguredTsas:
    """Build every configured TSA; raise :class:`ConfigError` naming the first bad key."""
    providers = []
    anchors: dict[str, tuple[x509.Certificate, ...]] = {}
    for number, tsa in enumerate(timestamp.tsa):
        key = f"timestamp.tsa[{number}]"
        roots = _anchors(tsa, key)
        anchors[tsa.name] = roots
        providers.append(
            Rfc3161Provider(
                name=tsa.name,
                url=tsa.url,
                client=client,
                anchors=roots,
                timeout=timestamp.timeout,
                min_interval=tsa.min_interval,
                policy=tsa.policy,
                authorization=_authorization(tsa, key),
                key=key,
                trust_file=tsa.trust,
            )
        )
    return ConfiguredTsas(tuple(providers), anchors)


def _anchors(tsa: TsaConfig, key: str) -> tuple[x509.Certificate, ...]:
    path = tsa.trust or SYSTEM_BUNDLE
    try:
        return load_anchors(path)
    except TrustError as error:
        where = f"{key}.trust" if tsa.trust else f"{key}.trust (unset: the system bundle)"
        raise ConfigError(
            f"{where}: {error.message}",
            hint="point trust at a PEM file with the root certificate(s) of this TSA",
        ) from error


def _authorization(tsa: TsaConfig, key: str) -> str | None:
    if tsa.auth == "none" or tsa.secret_file is None:
        return None
    secret = read_secret(tsa.secret_file, f"{key}.secret_file")
    if tsa.auth == "basic":
        return Rfc3161Provider.basic_auth(tsa.username or "", secret)
    return f"Bearer {secret}"


def read_secret(path: Path, key: str) -> str:
    """The secret in ``path`` without its trailing newline (DESIGN rule 7: never logged).

    Warns when the file is readable by everyone: the secret is then not one.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            info = os.fstat(fd)
            data = os.read(fd, MAX_SECRET_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as error:
        raise ConfigError(
            f"{key}: cannot read {path}: {error.strerror}",
            hint="make the file readable by the user stampd runs as (mode 0600 or 0640)",
        ) from error
    if len(data) > MAX_SECRET_BYTES or not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{key}: {path} is not a small regular file holding a secret")
    if info.st_mode & stat.S_IROTH:
        log.warning(
            "secret_file_world_readable",
            key=key,
            path=str(path),
            hint=f"chmod o-r {path}",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from error
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"{key}: {path} is empty", hint="write the secret into it")
    return secret
