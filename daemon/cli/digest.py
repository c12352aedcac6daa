"""``stampd digest PATH…``: the digests stampd records, printed the way ``sha256sum`` prints them.

Lines are byte-for-byte what GNU ``sha256sum`` / ``sha512sum`` print, so
``stampd digest f | sha256sum -c`` works. Only the digest printed is computed (SHA-256 alone
runs about twice as fast as both); ``--json`` gives size and both digests, from one read. A
path that cannot be read is reported on stderr, the others are still digested, and the exit
code is 1. Needs no configuration file.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import click

from stampd.daemon.cli.exit_codes import ExitCode
from stampd.daemon.cli.output import emit_json, json_option, say
from stampd.store.errors import FileAccessError
from stampd.store.files.digest import (
    FileDigests,
    Progress,
    SingleDigest,
    digest_path,
    digest_stream,
    single_digest_path,
    single_digest_stream,
)
from stampd.store.files.pathnames import escape

#: Files at least this large get a progress bar, when stderr is a terminal: below it a
#: digest takes well under a second at the ~0.75 GB/s measured by bench/bench_digest.py.
PROGRESS_MIN_BYTES = 256 << 20

STDIN = "-"


def checksum_line(hexdigest: str, name: str) -> bytes:
    """One line of ``sha256sum`` output, escaped as GNU coreutils does.

    A name holding a backslash, newline or carriage return (coreutils 9 added the latter)
    has those written as ``\\\\``, ``\\n``, ``\\r`` and the line starts with a backslash,
    which tells ``sha256sum -c`` to unescape it. Names are bytes on Linux: the original
    bytes are printed even when they are not UTF-8.
    """
    raw = os.fsencode(name)
    if any(special in raw for special in (b"\\", b"\n", b"\r")):
        escaped = raw.replace(b"\\", b"\\\\").replace(b"\n", b"\\n").replace(b"\r", b"\\r")
        return b"\\" + hexdigest.encode("ascii") + b"  " + escaped + b"\n"
    return hexdigest.encode("ascii") + b"  " + raw + b"\n"


def _display(text: str) -> str:
    # Names that are not UTF-8, or hold a newline, in the form every stampd command prints
    # (`ls -b` style, store/files/pathnames.py): valid UTF-8 for JSON, one line for stderr.
    return escape(text)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


@contextmanager
def _progress(path: str) -> Iterator[Progress | None]:
    """A progress bar on stderr for a large file when stderr is a terminal, else nothing."""
    size = 0
    if path != STDIN and _stderr_is_terminal():
        try:
            size = Path(path).stat().st_size
        except OSError:
            size = 0  # digest_path reports the error properly
    if size < PROGRESS_MIN_BYTES:
        yield None
        return
    with click.progressbar(
        length=size, label=_display(path), file=sys.stderr, show_pos=False
    ) as bar:
        yield bar.update


def _digest_one(path: str, algo: str | None) -> FileDigests | SingleDigest:
    """Both digests of ``path`` when ``algo`` is None, else that one alone."""
    if path == STDIN:
        # sys.stdin.buffer rather than click.get_binary_stream, deprecated since click 8.5.
        stdin = sys.stdin.buffer
        try:
            if algo is None:
                return digest_stream(stdin)
            return single_digest_stream(stdin, algo)
        except OSError as error:
            raise FileAccessError(f"{STDIN}: {error.strerror or error}") from error
    with _progress(path) as progress:
        if algo is None:
            return digest_path(path, progress=progress)
        return single_digest_path(path, algo, progress=progress)


@click.command("digest")
@click.option(
    "--algo",
    type=click.Choice(["sha256", "sha512"]),
    default="sha256",
    show_default=True,
    help="Digest printed per line (--json always gives both).",
)
@json_option
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path())
def digest_command(
    algo: Literal["sha256", "sha512"], as_json: bool, paths: tuple[str, ...]
) -> None:
    """Print the SHA-256 (or SHA-512) of each PATH as sha256sum does; '-' reads stdin.

    The output can be checked with `sha256sum -c` / `sha512sum -c`. Files that cannot be
    read are reported on stderr and the others are still printed; the exit code is then 1.
    """
    files: list[dict[str, object]] = []
    errors: list[dict[str, str]] = []
    for path in paths:
        try:
            digests = _digest_one(path, None if as_json else algo)
        except FileAccessError as error:
            say(_display(f"stampd: {error}"))
            details = {key: _display(value) for key, value in error.to_dict().items()}
            errors.append({"path": _display(path), **details})
            continue
        if isinstance(digests, FileDigests):
            files.append(
                {
                    "path": _display(path),
                    "size": digests.size,
                    "sha256": digests.sha256_hex,
                    "sha512": digests.sha512_hex,
                }
            )
        else:
            click.echo(checksum_line(digests.hexdigest, path), nl=False)
    if as_json:
        emit_json({"files": files, "errors": errors})
    if errors:
        raise click.exceptions.Exit(ExitCode.FAILURE)
