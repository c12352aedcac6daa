"""``stampd verify PATH…``: what the evidence next to a file proves, checked offline.

Each PATH is hashed once; each sidecar found for it — one per kind the registry says is
verifiable (store/kinds.py) — is verified completely by that kind's verifier
(daemon/evidence/entries.py) and reported on one line: kind, status, time, authority, and
until when the authority's chain stays valid, or the exact reason it is not valid. With
``--tsr FILE`` the token is given explicitly and, together with ``--trust``, no configuration
file is needed at all: anyone handed a file and its token can check them. ``--ots FILE`` does
the same for an OpenTimestamps proof: without a configuration it is checked offline and its
Bitcoin attestations are listed by height and merkle root ("not checked against Bitcoin");
with one whose ``[anchor.bitcoin]`` names a node, they are checked against its block headers.

Exit status: 0 only when at least one proof exists for every PATH and all of them are valid;
1 otherwise (DESIGN §8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from stampd.daemon.cli.context import cli_context
from stampd.daemon.cli.exit_codes import ExitCode
from stampd.daemon.cli.output import emit_json, json_option, say
from stampd.daemon.cli.paths import argument_name, argument_path, shown
from stampd.daemon.config.model import Config
from stampd.daemon.config.problems import ConfigError
from stampd.daemon.evidence.entries import VerifyOptions, verifier_factory
from stampd.store import kinds
from stampd.store.errors import FileAccessError, StampdError
from stampd.store.files.digest import FileDigests, digest_path
from stampd.store.files.sidecar import MAX_SIDECAR_BYTES, Layout, read_sidecar, sidecar_path
from stampd.store.kinds import EvidenceKind, KindSpec
from stampd.store.verify import Verdict, Verifier, iso_time, unreadable


def _verifiable() -> tuple[KindSpec, ...]:
    """The kinds ``verify`` checks: a sidecar, and an offline verifier in the registry."""
    return tuple(
        kind for kind in kinds.with_sidecars() if kind.verifiable and kind.verifier is not None
    )


@dataclass
class _FileHash:
    """The data file's digests, computed once, on first need (SHA-384 only if a token uses it)."""

    path: Path
    _both: FileDigests | None = None
    _other: dict[str, bytes] | None = None

    def both(self) -> FileDigests:
        if self._both is None:
            self._both = digest_path(self.path)
        return self._both

    def __call__(self, algorithm: str) -> bytes:
        if algorithm == "sha256":
            return self.both().sha256
        if algorithm == "sha512":
            return self.both().sha512
        if self._other is None:
            self._other = {}
        if algorithm not in self._other:
            # The file is read again through the hasher's guards, following a symbolic link
            # the user named, as digest_path does. Imported here: the hasher brings the index
            # module along (~70 ms), which only a SHA-384 token needs.
            from stampd.daemon.watch.hasher import rehash  # noqa: PLC0415

            self._other |= rehash(self.path, (algorithm,), follow_symlinks=True)
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
    detail = verdict.detail
    note = "" if detail is None else detail.note()
    if verdict.message and verdict.chain_not_after is None:
        # A verifier that words its own valid verdict (an .ots: "existed no later than T:
        # Bitcoin block H has the proof's merkle root M"): the statement is the line.
        return f"{head}: {verdict.message}{note}"
    text = f"{head} {iso_time(verdict.gen_time)} {verdict.authority}{note}"
    until = iso_time(verdict.chain_not_after)
    if until is None:
        return text
    chain = "chain" if detail is None else f"{detail.chain_holder} chain"
    if verdict.renewal_overdue:
        return f"{text}; {chain} expired {until[:10]}: renewal overdue (restamp)"
    return f"{text}; {chain} valid until {until[:10]}"


@click.command("verify")
@click.option(
    "--tsr",
    "tsr_file",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False),
    help="Verify this token (TimeStampResp or bare token, DER or base64) against PATH.",
)
@click.option(
    "--ots",
    "ots_file",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False),
    help="Verify this OpenTimestamps proof against PATH (no configuration needed).",
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
    *,
    tsr_file: str | None,
    ots_file: str | None,
    trust: tuple[str, ...],
    untrusted: str | None,
    as_json: bool,
    paths: tuple[str, ...],
) -> None:
    """Verify the evidence of each PATH offline and say what it proves.

    Finds PATH's sidecars (PATH.tsr, PATH.ots, or under the state directory for a mirror
    watch), hashes PATH, and checks each proof completely. Exit 0 only when every PATH has
    at least one proof and all of them are valid.
    """
    given = {
        kind: Path(file)
        for kind, file in ((EvidenceKind.TSR, tsr_file), (EvidenceKind.OTS, ots_file))
        if file is not None
    }
    if given and len(paths) != 1:
        raise click.UsageError("--tsr and --ots verify the proof given against exactly one PATH")
    # A tsr token needs roots: --trust, or the configured TSAs'. An .ots proof needs nothing
    # (the configuration only adds a header source), so --ots alone works without one.
    needs_roots = not trust and (not given or EvidenceKind.TSR in given)
    config = (
        None
        if (given.keys() == {EvidenceKind.TSR} and trust)
        else _config_or_none(required=needs_roots)
    )
    options = VerifyOptions(
        config,
        trust=tuple(Path(file) for file in trust),
        untrusted=Path(untrusted) if untrusted else None,
    )
    checked = _verifiable()
    if given:
        checked = tuple(kind for kind in checked if kind.name in given)
    # Built before any file is read: a bad --trust or --untrusted file is one error up front.
    verifiers = {kind.name: verifier_factory(kind)(options) for kind in checked}
    files: list[dict[str, Any]] = []
    proven_all = True
    for argument in paths:
        path = argument_path(argument)
        # Shown as given (relative stays relative), every byte visible (store/files/pathnames.py).
        name = shown(argument_name(argument))
        hashed = _FileHash(path)
        try:
            hashed.both()
            sources: list[tuple[str, Path, bytes]]
            if given:
                # --tsr and --ots name the kind of the file they give.
                sources = [(kind, file, _read_given(file)) for kind, file in given.items()]
            else:
                sources = _sidecars(path, _where(path, config), checked)
        except (StampdError, OSError) as error:
            message = _problem(argument, path, error)
            say(f"stampd: {name}: {message}")
            files.append({"path": name, "error": message, "evidence": [], "proven": False})
            proven_all = False
            continue
        verdicts = [
            _verdict(verifiers[kind], kind, source, data, hashed) for kind, source, data in sources
        ]
        proven = bool(verdicts) and all(v.valid for v in verdicts)
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
                looked_for = _looked_for(path, config, checked)
                click.echo(f"{name}: no evidence found (looked for {looked_for})")
            for verdict in verdicts:
                click.echo(_line(name, verdict))
    if as_json:
        emit_json({"files": files, "proven": proven_all})
    if not proven_all:
        raise click.exceptions.Exit(ExitCode.FAILURE)


def _read_given(file: Path) -> bytes:
    """A proof named on the command line, read up to the sidecar cap (not a whole disk image)."""
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_SIDECAR_BYTES + 1)
    except OSError as error:
        raise FileAccessError(f"cannot read {file}: {error.strerror}") from error
    if len(data) > MAX_SIDECAR_BYTES:
        raise FileAccessError(
            f"{file} is larger than {MAX_SIDECAR_BYTES:,} bytes: not a proof stampd reads"
        )
    return data


def _verdict(
    verifier: Verifier, kind: str, source: Path, data: bytes, hashed: _FileHash
) -> Verdict:
    try:
        return verifier.verify(data, source=str(source), digest_of=hashed)
    except StampdError as error:
        return unreadable(kind, str(source), error)


def _sidecars(
    path: Path, where: _Where, checked: Sequence[KindSpec]
) -> list[tuple[str, Path, bytes]]:
    found = []
    for kind in checked:
        data = read_sidecar(path, kind.name, layout=where.layout, state_dir=where.state_dir)
        if data is not None:
            at = sidecar_path(path, kind.name, layout=where.layout, state_dir=where.state_dir)
            found.append((kind.name, at, data))
    return found


def _looked_for(path: Path, config: Config | None, checked: Sequence[KindSpec]) -> str:
    where = _where(path, config)
    return ", ".join(
        shown(sidecar_path(path, kind.name, layout=where.layout, state_dir=where.state_dir))
        for kind in checked
    )
