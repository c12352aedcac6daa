"""The TSAs of ``[[timestamp.tsa]]`` as live providers: roots loaded, secrets read.

What a TSA's settings name on disk — the ``trust`` file of its roots, the ``secret_file`` of
its credentials — is checked by :func:`check_tsas`, which collects every problem instead of
stopping at the first. ``stampd config check`` and the start of ``stampd run`` use it through
:mod:`stampd.daemon.config.check`, so that a trust file without a root or an unreadable secret
is refused before anything starts, with a message naming the key (DESIGN rule 2: only bad
configuration stops the daemon), rather than failing every job later. :func:`configured_tsas`
builds the providers from the values the same check loaded.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509

from stampd.daemon.config.model import TimestampConfig, TsaConfig
from stampd.daemon.config.problems import ConfigProblem, config_error
from stampd.daemon.service.logs import get_logger
from stampd.store.trust import SYSTEM_BUNDLE, TrustError, load_anchors

if TYPE_CHECKING:
    # Only for annotations: checking a configuration (``stampd config check``, the start of
    # ``stampd run``) needs the roots and the secrets, not the HTTP client. httpx and the
    # provider's TSP code cost ~130 ms to import; they are imported where a provider is built.
    import httpx

    from stampd.daemon.evidence.tsa import Rfc3161Provider

log = get_logger("stampd.providers")

#: A secret file larger than this is not a password or a token.
MAX_SECRET_BYTES = 64 * 1024


@dataclass(frozen=True)
class ConfiguredTsas:
    """The providers in configuration order, and each one's trust anchors by name."""

    providers: tuple[Rfc3161Provider, ...]
    anchors: dict[str, tuple[x509.Certificate, ...]]


@dataclass(frozen=True)
class CheckedTsa:
    """One TSA whose files were read: its roots and the ``Authorization`` header to send."""

    key: str
    config: TsaConfig
    anchors: tuple[x509.Certificate, ...]
    authorization: str | None


@dataclass(frozen=True)
class SecretWarning:
    """A secret file that works but is readable by every user (DESIGN rule 7)."""

    key: str
    path: Path

    def line(self) -> str:
        """The warning as one line, naming the key and what to do."""
        return f"{self.key}: {self.path} is readable by every user (chmod o-r {self.path})"

    def log(self) -> None:
        """The warning in the daemon's log (the file's name only, never its content)."""
        log.warning(
            "secret_file_world_readable",
            key=self.key,
            path=str(self.path),
            hint=f"chmod o-r {self.path}",
        )


@dataclass(frozen=True)
class CheckedTsas:
    """The outcome of :func:`check_tsas`: the TSAs that passed, and every problem found."""

    tsas: tuple[CheckedTsa, ...]
    problems: tuple[ConfigProblem, ...]
    warnings: tuple[SecretWarning, ...]


def check_tsas(
    tsas: Sequence[tuple[str, TsaConfig]], *, skip: frozenset[str] = frozenset()
) -> CheckedTsas:
    """Read the trust file and the secret file of every TSA in ``tsas`` (key path, settings).

    Every problem is collected, one per key. A key in ``skip`` already has a problem (the file
    does not exist, say) and is not checked again. A trust file shared by several TSAs (the
    system bundle, usually) is read once.
    """
    problems: list[ConfigProblem] = []
    warnings: list[SecretWarning] = []
    checked: list[CheckedTsa] = []
    loaded: dict[Path, tuple[x509.Certificate, ...] | TrustError] = {}
    for key, tsa in tsas:
        roots = None if f"{key}.trust" in skip else _roots(key, tsa, loaded, problems)
        usable, authorization = _credentials(key, tsa, skip, problems, warnings)
        if roots is not None and usable:
            checked.append(CheckedTsa(key, tsa, roots, authorization))
    return CheckedTsas(tuple(checked), tuple(problems), tuple(warnings))


def _roots(
    key: str,
    tsa: TsaConfig,
    loaded: dict[Path, tuple[x509.Certificate, ...] | TrustError],
    problems: list[ConfigProblem],
) -> tuple[x509.Certificate, ...] | None:
    """The TSA's trust anchors, or None with its problem added to ``problems``."""
    path = tsa.trust or SYSTEM_BUNDLE
    if path not in loaded:
        try:
            loaded[path] = load_anchors(path)
        except TrustError as error:
            loaded[path] = error
    outcome = loaded[path]
    if isinstance(outcome, TrustError):
        problems.append(_trust_problem(key, tsa, outcome))
        return None
    return outcome


def _credentials(
    key: str,
    tsa: TsaConfig,
    skip: frozenset[str],
    problems: list[ConfigProblem],
    warnings: list[SecretWarning],
) -> tuple[bool, str | None]:
    """(whether the TSA's secret, if it needs one, is usable; its Authorization header)."""
    if tsa.auth == "none" or tsa.secret_file is None:
        return True, None
    secret_key = f"{key}.secret_file"
    if secret_key in skip:
        return False, None
    secret = _load_secret(tsa.secret_file, secret_key)
    if isinstance(secret, ConfigProblem):
        problems.append(secret)
        return False, None
    text, world_readable = secret
    if world_readable:
        warnings.append(SecretWarning(secret_key, tsa.secret_file))
    if tsa.auth == "basic":
        return True, basic_auth(tsa.username or "", text)
    return True, f"Bearer {text}"


def basic_auth(username: str, secret: str) -> str:
    """The Authorization header value for HTTP basic authentication (RFC 7617 §2)."""
    pair = f"{username}:{secret}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def configured_tsas(timestamp: TimestampConfig, client: httpx.AsyncClient) -> ConfiguredTsas:
    """Build every configured TSA; raise :class:`ConfigError` listing every bad key.

    A secret file readable by everyone is logged as a warning (its name only, never its
    content).
    """
    # Here, not at the top: see the TYPE_CHECKING imports.
    from stampd.daemon.evidence.tsa import Rfc3161Provider  # noqa: PLC0415

    checked = check_tsas(
        [(f"timestamp.tsa[{number}]", tsa) for number, tsa in enumerate(timestamp.tsa)]
    )
    if checked.problems:
        raise config_error(None, checked.problems)
    for warning in checked.warnings:
        warning.log()
    providers = tuple(
        Rfc3161Provider(
            name=tsa.config.name,
            url=tsa.config.url,
            client=client,
            anchors=tsa.anchors,
            timeout=timestamp.timeout,
            min_interval=tsa.config.min_interval,
            policy=tsa.config.policy,
            authorization=tsa.authorization,
            key=tsa.key,
            trust_file=tsa.config.trust,
        )
        for tsa in checked.tsas
    )
    return ConfiguredTsas(providers, {tsa.config.name: tsa.anchors for tsa in checked.tsas})


def _trust_problem(key: str, tsa: TsaConfig, error: TrustError) -> ConfigProblem:
    if tsa.trust is None:
        return ConfigProblem(
            f"{key}.trust",
            None,
            f"unset, so the system bundle is used: {error.message}",
            "install ca-certificates, or set trust to a PEM file with the root certificate(s)"
            " of this TSA",
        )
    return ConfigProblem(
        f"{key}.trust",
        str(tsa.trust),
        error.message,
        error.hint or "point trust at a PEM file with the root certificate(s) of this TSA",
    )


def read_secret(path: Path, key: str) -> str:
    """The secret in ``path`` without its trailing newline (DESIGN rule 7: never logged).

    Raises :class:`ConfigError` naming ``key`` when the file cannot serve as a secret. Warns
    when the file is readable by everyone: the secret is then not one.
    """
    secret = _load_secret(path, key)
    if isinstance(secret, ConfigProblem):
        raise config_error(None, [secret])
    text, world_readable = secret
    if world_readable:
        SecretWarning(key, path).log()
    return text


def _load_secret(path: Path, key: str) -> tuple[str, bool] | ConfigProblem:
    """(the secret, whether everyone may read the file), or the problem with the file."""

    def problem(text: str, hint: str | None = None) -> ConfigProblem:
        # The value is the path: the file's content is the secret and is never shown. Quoted,
        # as the configuration's own checks show paths.
        quoted = json.dumps(str(path), ensure_ascii=False)
        return ConfigProblem(key, str(path), f"{quoted} {text}", hint)

    try:
        # O_NONBLOCK: a FIFO must not hang the start; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return problem(
                    "is not a regular file", "point secret_file at the file holding the secret"
                )
            data = os.read(fd, MAX_SECRET_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as error:
        return problem(
            f"cannot be read ({error.strerror})",
            "make the file readable by the user stampd runs as (mode 0600 or 0640)",
        )
    if len(data) > MAX_SECRET_BYTES:
        return problem(
            f"is larger than {MAX_SECRET_BYTES // 1024} KiB, which is not a password or a token",
            "point secret_file at the file holding only the secret",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return problem("is not UTF-8 text", "write the secret as text, with nothing else")
    secret = text.rstrip("\r\n")
    if not secret:
        return problem("is empty", "write the secret into it")
    return secret, bool(info.st_mode & stat.S_IROTH)
