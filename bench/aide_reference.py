"""AIDE, the C peer of stampd's first scan (DESIGN §11, issue 13): found or installed, run, checked.

AIDE (Debian package ``aide``) does what a first scan does: walk a tree, hash every file with
SHA-256 and SHA-512, and write a database. ``aide --init`` on the bench's tree, with a rule of
the usual stat attributes plus both digests, is the reference that ``bench_scan.py`` times
beside stampd in the same run.

The configuration is DESIGN §11's (``database_out``, ``gzip_dbout=no``,
``H = p+i+n+u+g+s+m+c+sha256+sha512``, the tree as the only selection line) with the report
kept quiet: ``report_level=minimal`` and ``database_attrs=E``. Without the latter AIDE hashes
its own database with every algorithm it knows for the report (aide.conf(5), "database_attrs",
default H): about 1.5 s of CPU per 100k files that have nothing to do with the tree, so the
reference measured here is a little faster, and stampd's target a little stricter, than the
configuration of DESIGN §11 alone.

``python bench/aide_reference.py`` is the install step of ``make bench`` (bench/run.py): it
installs the package with apt-get when AIDE is missing and this is root, and otherwise says
how. The benchmarks themselves never install anything (tests/test_bench_smoke.py runs them):
without AIDE they skip its column with the reason.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "aide"
HOW_TO_INSTALL = "apt-get install aide"


def find_aide() -> str | None:
    """The path of the ``aide`` program, or None."""
    return shutil.which("aide")


def missing_reason() -> str:
    """Why the AIDE column is empty, and what to do about it."""
    return f"aide is not installed: run `{HOW_TO_INSTALL}` (as root), or `make bench` as root"


def install_aide() -> tuple[str | None, str]:
    """``(path of aide, "")``, installing the Debian package when missing and root;
    ``(None, reason)`` when it is not to be had (the reason says how to get it)."""
    found = find_aide()
    if found is not None:
        return found, ""
    if os.geteuid() != 0:
        return None, missing_reason()
    if shutil.which("apt-get") is None:
        return None, "aide is not installed and there is no apt-get: install AIDE 0.18 by hand"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", PACKAGE]
    done = subprocess.run(install, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        # A fresh machine has no package lists yet ("Unable to locate package").
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False, env=env)
        done = subprocess.run(install, capture_output=True, text=True, check=False, env=env)
    found = find_aide()
    if found is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"`{' '.join(install)}` failed: {tail[0]}"
    return found, ""


@dataclass(frozen=True)
class AideSetup:
    """One AIDE configuration written for one tree."""

    config: Path
    database: Path
    text: str


def write_config(directory: Path, tree: Path, *, workers: str | None = None) -> AideSetup:
    """Write ``directory/aide.conf`` for ``aide --init`` of ``tree`` (see the module docstring).

    ``workers``: AIDE 0.18's ``num_workers`` (``"2"``, ``"100%"``); None keeps AIDE's default
    (one worker thread), which is DESIGN §11's configuration.
    """
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "aide.db.new"
    lines = [
        f"database_out=file:{database}",
        "gzip_dbout=no",
        # The report's checksums of the database itself: work that is not the tree's.
        "database_attrs=E",
        "report_level=minimal",
        "report_url=stdout",
        *([f"num_workers={workers}"] if workers else []),
        "H = p+i+n+u+g+s+m+c+sha256+sha512",
        # The only selection line: the tree and everything below it, with rule H.
        f"{tree} H",
    ]
    text = "\n".join(lines) + "\n"
    config = directory / "aide.conf"
    config.write_text(text)
    return AideSetup(config=config, database=database, text=text)


@dataclass(frozen=True)
class Timed:
    """One timed run of a reference: wall seconds and the CPU seconds of its processes."""

    wall_s: float
    cpu_s: float


def children_cpu_s() -> float:
    """User + system CPU of every child process waited for so far (getrusage(2))."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_init(aide: str, setup: AideSetup) -> Timed:
    """``aide --init --config=FILE``, timed; raises RuntimeError with AIDE's words on failure."""
    setup.database.unlink(missing_ok=True)
    cpu = children_cpu_s()
    start = time.perf_counter()
    done = subprocess.run(
        [aide, "--init", f"--config={setup.config}"], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"aide --init exited {done.returncode}: {done.stderr or done.stdout}")
    return Timed(wall_s=wall, cpu_s=children_cpu_s() - cpu)


@dataclass(frozen=True)
class DatabaseCheck:
    """What AIDE's database holds: regular files with both digests, and one checked by hand."""

    regular_files: int
    with_both_digests: int
    sample: str
    sample_matches: bool


def check_database(setup: AideSetup, sample: Path) -> DatabaseCheck:
    """Read AIDE's database and count the regular files that carry a SHA-256 and a SHA-512;
    compare ``sample``'s two digests with hashlib's, so the reference is known to have
    hashed what it says (a rule without the digests would be a stat walk, and far faster).

    AIDE writes each digest base64-encoded in the column its ``@@db_spec`` line names; an
    attribute it did not compute is written ``0``.
    """
    raw = setup.database.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip_dbout=yes
        raw = gzip.decompress(raw)
    columns: list[str] = []
    regular = both = 0
    sample_matches = False
    data = sample.read_bytes()
    expected = (
        base64.b64encode(hashlib.sha256(data).digest()).decode(),
        base64.b64encode(hashlib.sha512(data).digest()).decode(),
    )
    for line in raw.decode(errors="replace").splitlines():
        if line.startswith("@@db_spec"):
            columns = line.split()[1:]
            continue
        if not columns or not line.startswith("/"):
            continue
        entry = dict(zip(columns, line.split(), strict=False))
        if not entry.get("perm", "").startswith("100"):  # octal S_IFREG
            continue
        regular += 1
        digests = (entry.get("sha256", "0"), entry.get("sha512", "0"))
        if "0" not in digests:
            both += 1
        if entry.get("name") == str(sample):
            sample_matches = digests == expected
    return DatabaseCheck(
        regular_files=regular,
        with_both_digests=both,
        sample=str(sample),
        sample_matches=sample_matches,
    )


def main() -> int:
    """The install step of ``make bench``: AIDE present afterwards, or the reason why not."""
    path, reason = install_aide()
    if path is None:
        print(f"AIDE reference skipped: {reason}", file=sys.stderr)
        return 0  # the benchmarks run without it and say why its column is empty
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    first = (version.stdout or version.stderr).strip().splitlines()[:1]
    print(f"AIDE reference: {path} ({first[0] if first else 'version unknown'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
