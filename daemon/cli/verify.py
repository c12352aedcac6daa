"""``stampd verify PATH…``: what the evidence next to a file proves, checked offline.

Each PATH is hashed once; each sidecar found for it is verified completely (store/verify.py)
and reported on one line: kind, status, genTime, authority, and until when the TSA chain
stays valid, or the exact reason it is not valid. With ``--tsr FILE`` the token is given
explicitly and, together with ``--trust``, no configuration file is needed at all: anyone
handed a file and its token can check them.

Exit status: 0 only when at least one proof exists for every PATH and all of them are valid;
1 otherwise (DESIGN §8).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from stampd.daemon.cli.context import cli_context
from stampd.daemon.cli.exit_codes import ExitCode
from stampd.daemon.cli.output import emit_json, json_option, say
from stampd.daemon.cli.paths import argument_name, argument_path, shown
from stampd.daemon.config.model import Config
from stampd.daemon.config.problems import ConfigError
from stampd.store.errors import FileAccessError, StampdError
from stampd.store.files.digest import FileDigests, digest_path
from stampd.store.files.sidecar import Layout, read_sidecar, sidecar_path
from stampd.store.trust import SYSTEM_BUNDLE, load_anchors, load_certificates
from stampd.store.verify import Verdict, unreadable, verify_tsr

#: Evidence kinds this version of ``verify`` checks (the others come with their issues).
CHECKED_KINDS = ("tsr",)


@dataclass
class _FileHash:
    """The data file's digests, computed once, on first need (SHA-384 only if a token uses it)."""

    path: Path
    _both: FileDigests | None = None
    _other: dict[str, bytes] = field(default_factory=dict)

    def both(self) -> FileDigests:
        if self._both is None:
            self._both = digest_path(self.path)
        return self._both

    def __call__(self, algorithm: str) -> bytes:
        if algorithm == "sha256":
            return self.both().sha256
        if algorithm == "sha512":
            return self.both().sha512
        if algorithm not in self._other:
            hasher = hashlib.new(algorithm)
            try:
                with self.path.open("rb") as handle:
                    while chunk := handle.read(1 << 20):
                        hasher.update(chunk)
            except OSError as error:
                raise FileAccessError(f"{self.path}: {error.strerror or error}") from error
            self._other[algorithm] = hasher.digest()
        return self._other[algorithm]


@dataclass(frozen=True)
class _Where:
    """Where a file's sidecars are, by its watch's layout (adjacent without configuration)."""

    layout: Layout
    state_dir: Path


def _where(path: Path, config: Config | None) -> _Where:
    if config is None:
        return _Where("adjacent", Path("/"))
    for watch in config.watches:
        if path == watch.path or watch.path in path.parents:
            return _Where(watch.sidecars, config.daemon.state_dir)
    return _Where("adjacent", config.daemon.state_dir)


@dataclass(frozen=True)
class _Roots:
    """The anchor sets a token may chain to, and how to name them in a message."""

    sets: list[tuple[x509.Certificate, ...]]
    #: Where they came from: the --trust files, or each TSA's ``trust`` key.
    described: str
    #: What to do when a TSA's root is not among them.
    remedy: str


def _trust_from(trust: Sequence[str], config: Config | None) -> _Roots:
    if trust:
        return _Roots(
            [load_anchors(Path(file)) for file in trust],
            "--trust " + ", ".join(trust),
            "give its root certificate with --trust ROOT.pem",
        )
    tsas = config.timestamp.tsa if config is not None else ()
    described = "; ".join(
        f'timestamp.tsa[{number}] "{tsa.name}": '
        + (f"trust = {tsa.trust}" if tsa.trust else f"trust unset, so {SYSTEM_BUNDLE}")
        for number, tsa in enumerate(tsas)
    )
    return _Roots(
        [load_anchors(tsa.trust or SYSTEM_BUNDLE) for tsa in tsas],
        described or "no [[timestamp.tsa]] is configured",
        "add its root certificate to trust (or --trust ROOT.pem)",
    )


def _advise(verdict: Verdict, untrusted: str | None) -> Verdict:
    """Say what to do about a token without its TSA's certificate (made without certReq)."""
    if verdict.reason != "signer_unavailable":
        return verdict
    if untrusted is None:
        tip = "give the TSA's certificate with --untrusted CERTS.pem"
    else:
        tip = (
            f"{untrusted} does not hold it either: give the TSA's own certificate with --untrusted"
        )
    return replace(verdict, message=f"{verdict.message}: {tip}")


def _problem(name: str, path: Path, error: StampdError | OSError) -> str:
    """What went wrong with PATH, without repeating its name (it starts the line already)."""
    # A StampdError's str() carries its hint.
    text = str(error) if isinstance(error, StampdError) else error.strerror or str(error)
    for prefix in (f"{path}: ", f"{name}: "):
        text = text.removeprefix(prefix)
    return text


def _config_or_none(*, required: bool) -> Config | None:
    """The configuration; without ``--trust`` it is needed for the roots, else optional."""
    try:
        return cli_context().config()
    except ConfigError:
        if required:
            raise
        return None


def _line(path: str, verdict: Verdict) -> str:
    head = f"{path}: {verdict.kind} {verdict.status}"
    if verdict.status != "valid":
        return f"{head}: {verdict.reason}: {verdict.message}"
    gen_time = verdict.to_dict()["gen_time"]
    until = verdict.to_dict()["chain_not_after"][:10]
    text = f"{head} {gen_time} {verdict.authority} (serial {verdict.serial:x})"
    if verdict.renewal_overdue:
        return f"{text}; TSA chain expired {until}: renewal overdue (restamp)"
    return f"{text}; TSA chain valid until {until}"


@click.command("verify")
@click.option(
    "--tsr",
    "tsr_file",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False),
    help="Verify this token (TimeStampResp or bare token, DER or base64) against PATH.",
)
@click.option(
    "--trust",
    metavar="PEM",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Root certificate(s) the TSA must chain to, instead of the configured ones.",
)
@click.option(
    "--untrusted",
    metavar="PEM",
    type=click.Path(exists=True, dir_okay=False),
    help="Certificates to use when a token does not carry its TSA's (never trusted as roots).",
)
@json_option
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path())
def verify_command(
    tsr_file: str | None,
    trust: tuple[str, ...],
    untrusted: str | None,
    as_json: bool,
    paths: tuple[str, ...],
) -> None:
    """Verify the evidence of each PATH offline and say what it proves.

    Finds PATH's sidecars (PATH.tsr, or under the state directory for a mirror watch),
    hashes PATH, and checks each proof completely. Exit 0 only when every PATH has at
    least one proof and all of them are valid.
    """
    if tsr_file is not None and len(paths) != 1:
        raise click.UsageError("--tsr verifies one token against exactly one PATH")
    config = None if (tsr_file is not None and trust) else _config_or_none(required=not trust)
    roots = _trust_from(trust, config)
    extra = load_certificates(Path(untrusted)) if untrusted else ()
    files: list[dict[str, Any]] = []
    proven_all = True
    for argument in paths:
        path = argument_path(argument)
        # Shown as given (relative stays relative), every byte visible (store/files/pathnames.py).
        name = shown(argument_name(argument))
        hashed = _FileHash(path)
        verdicts: list[Verdict] = []
        try:
            hashed.both()
            if tsr_file is not None:
                sources = [(Path(tsr_file), Path(tsr_file).read_bytes())]
            else:
                sources = _sidecars(path, _where(path, config))
        except (StampdError, OSError) as error:
            message = _problem(argument, path, error)
            say(f"stampd: {name}: {message}")
            files.append({"path": name, "error": message, "evidence": [], "proven": False})
            proven_all = False
            continue
        for source, data in sources:
            try:
                verdict = verify_tsr(
                    data,
                    source=str(source),
                    digest_of=hashed,
                    trust=roots.sets,
                    extra_certificates=extra,
                    roots=roots.described,
                    root_remedy=roots.remedy,
                )
            except StampdError as error:
                verdict = unreadable("tsr", str(source), error)
            verdicts.append(_advise(verdict, untrusted))
        proven = bool(verdicts) and all(v.status == "valid" for v in verdicts)
        proven_all = proven_all and proven
        files.append(
            {
                "path": name,
                "sha256": hashed.both().sha256_hex,
                "evidence": [verdict.to_dict() for verdict in verdicts],
                "proven": proven,
            }
        )
        if not as_json:
            if not verdicts:
                click.echo(f"{name}: no evidence found (looked for {_looked_for(path, config)})")
            for verdict in verdicts:
                click.echo(_line(name, verdict))
    if as_json:
        emit_json({"files": files, "proven": proven_all})
    if not proven_all:
        raise click.exceptions.Exit(ExitCode.FAILURE)


def _sidecars(path: Path, where: _Where) -> list[tuple[Path, bytes]]:
    found = []
    for kind in CHECKED_KINDS:
        data = read_sidecar(path, kind, layout=where.layout, state_dir=where.state_dir)
        if data is not None:
            found.append(
                (sidecar_path(path, kind, layout=where.layout, state_dir=where.state_dir), data)
            )
    return found


def _looked_for(path: Path, config: Config | None) -> str:
    where = _where(path, config)
    return ", ".join(
        shown(sidecar_path(path, kind, layout=where.layout, state_dir=where.state_dir))
        for kind in CHECKED_KINDS
    )
