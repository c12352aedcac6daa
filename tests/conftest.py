"""Shared test fixtures: external tools, configurations on disk, and the `stampd` CLI."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stampd.store.filestat import FileStat
from stampd.store.index import Settled, utc_now

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NOBODY = 65534


def require_tool(name: str) -> str:
    """The path of an external tool; skip the test when it is missing.

    CI sets STAMPD_REQUIRE_INTEROP=1, which turns that skip into a failure, so an
    interoperability check can never silently stop running (DESIGN §10).
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if os.environ.get("STAMPD_REQUIRE_INTEROP") == "1":
            pytest.fail(f"{message} (STAMPD_REQUIRE_INTEROP=1: .ci/run must install it)")
        pytest.skip(message)
    return path


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a minimal valid configuration (one inventory-only watch: no evidence, so no
    network) plus extra TOML."""

    def make(extra: str = "", *, evidence: str = "[]") -> Path:
        watch = tmp_path / "watched"
        watch.mkdir(exist_ok=True)
        config = tmp_path / "config.toml"
        config.write_text(
            "[daemon]\n"
            f'state_dir = "{tmp_path / "state"}"\n'
            f'control_socket = "{tmp_path / "control.sock"}"\n'
            'log_format = "json"\n'
            "[[watch]]\n"
            f'path = "{watch}"\n'
            f"evidence = {evidence}\n" + extra
        )
        return config

    return make


@contextmanager
def unprivileged() -> Iterator[None]:
    """Run a block with the effective uid/gid of `nobody` when the tests run as root.

    Root reads every file whatever its mode, so "unreadable file" tests would prove nothing
    there (CI runs as root). The real uid stays 0, so the block can switch back.
    """
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory that `nobody` can traverse (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="stampd-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def settled(
    watch_id: int,
    path: Path,
    *,
    sha256: str,
    sha512: str,
    evidence: tuple[str, ...] | list[str] = ("tsr",),
    size: int = 5,
    mtime_ns: int = 1,
    ctime_ns: int = 2,
    dev: int = 3,
    ino: int = 4,
) -> Settled:
    """A hashed file ready for ``Index.record_settled``, with made-up stat fields."""
    return Settled(
        watch_id=watch_id,
        path=path,
        stat=FileStat(dev=dev, ino=ino, size=size, mtime_ns=mtime_ns, ctime_ns=ctime_ns),
        sha256=sha256,
        sha512=sha512,
        hashed_at=utc_now(),
        racy=False,
        evidence=tuple(evidence),
    )
