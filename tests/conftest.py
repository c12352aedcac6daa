"""Shared test fixtures: external tools, configurations on disk, and the `stampd` CLI."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stampd.store.files.filestat import FileStat
from stampd.store.index.times import utc_now
from stampd.store.index.versions import Settled

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
NOBODY = 65534
#: Why the real-world vector tests skip in a lone clone (DESIGN §10: vectors are read in place).
VECTORS_MISSING = (
    "../shared/vectors not found: the real-world vectors live beside the checkout, see README"
)
#: The one parameter a vector-list parametrize gets without the folder: its test then skips.
NO_VECTORS = "(no ../shared/vectors)"


def _interop_required() -> bool:
    return os.environ.get("STAMPD_REQUIRE_INTEROP") == "1"


def require_tool(name: str) -> str:
    """The path of an external tool; skip the test when it is missing.

    CI sets STAMPD_REQUIRE_INTEROP=1, which turns that skip into a failure, so an
    interoperability check can never silently stop running (DESIGN §10).
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if _interop_required():
            pytest.fail(f"{message} (STAMPD_REQUIRE_INTEROP=1: .ci/run must install it)")
        pytest.skip(message)
    return path


def require_ots() -> str:
    """The path of the real `ots` command (opentimestamps-client, the `.ots` oracle).

    It is a test dependency of the project (pyproject's ``test`` extra), so it lives in the
    venv's bin folder, which is not on PATH when the tests run as ``.venv/bin/pytest``: look
    there first (beside the running interpreter), then on PATH like `require_tool`, which
    also gives the skip, or the failure under STAMPD_REQUIRE_INTEROP=1.
    """
    beside = Path(sys.executable).parent / "ots"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return require_tool("ots")


def shared_vectors(kind: str) -> Path:
    """The folder of real-world vectors of one kind (``tsr``, ``ots``, ``ers``), read in place.

    The vectors live in ``../shared/vectors/`` beside the checkout and are never copied into
    the project, so a lone clone has none: the test then skips with the reason, and fails
    under STAMPD_REQUIRE_INTEROP=1 like a missing tool (DESIGN §10). Call it inside the test
    (never at import or collection time) so that collection works without the folder.
    """
    folder = SHARED / "vectors" / kind
    if not folder.is_dir():
        if _interop_required():
            pytest.fail(f"{VECTORS_MISSING} (STAMPD_REQUIRE_INTEROP=1: the vectors must be there)")
        pytest.skip(VECTORS_MISSING)
    return folder


def shared_vector_names(kind: str, pattern: str) -> list[str]:
    """The names of ``kind``'s vectors matching ``pattern``, for a parametrize list.

    Without the folder, the list is the single placeholder NO_VECTORS: the test body's
    ``shared_vectors`` call then skips (or fails) with the reason, instead of pytest
    collecting an empty parameter set that would say nothing about why.
    """
    folder = SHARED / "vectors" / kind
    if not folder.is_dir():
        return [NO_VECTORS]
    return sorted(path.name for path in folder.glob(pattern))


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
