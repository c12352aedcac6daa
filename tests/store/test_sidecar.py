"""store/files/sidecar.py: names, the "ours?" predicate, and writes that never touch data."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stampd.store import kinds
from stampd.store.errors import FileAccessError, SidecarExistsError, UnsafePathError
from stampd.store.files import atomic
from stampd.store.files.sidecar import (
    Layout,
    data_name_of,
    is_ours,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from stampd.store.kinds import JobAction, KindSpec

STATE = Path("/var/lib/stampd")
STAT_FIELDS = (
    "st_mode",
    "st_ino",
    "st_dev",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_atime_ns",
    "st_mtime_ns",
    "st_ctime_ns",
)


@pytest.fixture
def strict_umask() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def snapshot(path: Path) -> dict[str, int]:
    st_ = os.stat(path, follow_symlinks=False)
    return {field: getattr(st_, field) for field in STAT_FIELDS}


# --- naming ------------------------------------------------------------------------------


def test_kinds_and_extensions() -> None:
    """The registry says which kinds keep a sidecar; attest receipts stay in the index."""
    extensions = {kind.name: kind.sidecar for kind in kinds.with_sidecars()}
    assert extensions == {"tsr": "tsr", "ots": "ots", "p7s": "p7s", "ers": "ers"}


#: A kind only this module knows: registered, its sidecars are named and recognised too.
TEST_KIND = KindSpec(
    "xyz",
    "test evidence",
    sidecar="xyzproof",
    actions=frozenset({JobAction.OBTAIN}),
    config_section=None,
    available=True,
)


def test_a_registered_kind_gets_its_sidecars_named_and_recognised() -> None:
    data = Path("/srv/records/b.pdf")
    assert not is_ours("b.pdf.xyzproof")  # before: someone else's file, stamped like any
    with pytest.raises(ValueError):
        sidecar_path(data, "xyz", layout="adjacent", state_dir=STATE)
    with kinds.registered(TEST_KIND):
        path = sidecar_path(data, "xyz", layout="adjacent", state_dir=STATE)
        assert path == Path("/srv/records/b.pdf.xyzproof")
        assert sidecar_path(data, "xyz", layout="mirror", state_dir=STATE) == Path(
            "/var/lib/stampd/mirror/srv/records/b.pdf.xyzproof"
        )
        assert is_ours(path)
        assert data_name_of(path.name) == "b.pdf"
        assert is_ours("b.pdf.tsr")  # the built-in kinds still are
    # Unregistered again: the cache follows the registry back.
    assert not is_ours("b.pdf.xyzproof")
    assert data_name_of("b.pdf.xyzproof") is None


@pytest.mark.parametrize("kind", ["tsr", "ots", "p7s", "ers"])
def test_adjacent_path_is_next_to_the_data_file(kind: str) -> None:
    path = sidecar_path(Path("/srv/records/a/b.pdf"), kind, layout="adjacent", state_dir=STATE)
    assert path == Path(f"/srv/records/a/b.pdf.{kind}")


def test_mirror_path_repeats_the_absolute_path_under_the_state_dir() -> None:
    path = sidecar_path(Path("/srv/records/a/b.pdf"), "tsr", layout="mirror", state_dir=STATE)
    assert path == Path("/var/lib/stampd/mirror/srv/records/a/b.pdf.tsr")


def test_mirror_path_of_a_file_in_the_root_directory() -> None:
    path = sidecar_path(Path("/b.pdf"), "ots", layout="mirror", state_dir=STATE)
    assert path == Path("/var/lib/stampd/mirror/b.pdf.ots")


@pytest.mark.parametrize(
    ("data_path", "kind", "layout"),
    [
        (Path("relative/b.pdf"), "tsr", "adjacent"),
        (Path("/"), "tsr", "adjacent"),
        (Path("/srv/../etc/passwd"), "tsr", "mirror"),
        (Path("/srv/b.pdf"), "attest", "adjacent"),  # attest receipts have no sidecar
        (Path("/srv/b.pdf"), "TSR", "adjacent"),
        (Path("/srv/b.pdf"), "tsr", "beside"),
    ],
)
def test_sidecar_path_rejects_bad_input(data_path: Path, kind: str, layout: Layout) -> None:
    with pytest.raises(ValueError):
        sidecar_path(data_path, kind, layout=layout, state_dir=STATE)


@pytest.mark.parametrize(
    ("name", "ours"),
    [
        ("report.pdf.tsr", True),
        ("report.pdf.ots", True),
        ("report.pdf.p7s", True),
        ("report.pdf.ers", True),
        ("/srv/records/report.pdf.tsr", True),
        (Path("/srv/records/.hidden.ots"), True),
        ("report.pdf.ots.bak", True),  # left by `ots upgrade`
        ("a.ots.bak", True),
        (f".report.pdf.tsr.stampd-{'0123456789abcdef'}.tmp", True),
        (".x.stampd-ffffffffffffffff.tmp", True),
        ("report.pdf", False),
        ("report.tsr.pdf", False),
        ("tsr", False),
        (".tsr", False),
        (".ots.bak", False),
        ("report.TSR", False),
        ("report.tsr.bak", False),
        ("report.tsr~", False),
        (".hidden", False),
        (".a.XYZ123", False),  # rsync temp: the watcher's transient filter, not ours
        (".report.pdf.abc123.tmp", False),  # mkstemp-style, someone else's
        (".report.pdf.stampd-xyz.tmp", False),
        (".report.pdf.stampd-0123456789ABCDEF.tmp", False),
        ("/srv/records.tsr/report.pdf", False),  # only the last component counts
    ],
)
def test_is_ours(name: str | Path, ours: bool) -> None:
    assert is_ours(name) is ours


def test_temp_names_of_write_atomic_are_ours() -> None:
    assert is_ours(atomic._temp_name("report.pdf.tsr"))


# File names as os.listdir and watchdog hand them over: any bytes but "/" and NUL, decoded
# with surrogateescape, plus plain Unicode text; "." and ".." name directories, not files.
_NAME_BYTES = [b for b in range(1, 256) if b != ord("/")]
file_names = (
    st.one_of(
        st.lists(st.sampled_from(_NAME_BYTES), min_size=1, max_size=300).map(
            lambda raw: os.fsdecode(bytes(raw))
        ),
        st.text(
            alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="/\0"),
            min_size=1,
            max_size=300,
        ),
    )
).filter(lambda name: name not in {".", ".."})


@given(name=file_names, kind=st.sampled_from(sorted(kind.name for kind in kinds.with_sidecars())))
def test_any_file_name_gets_an_adjacent_sidecar_that_is_ours(name: str, kind: str) -> None:
    data_path = Path("/srv/records") / name
    path = sidecar_path(data_path, kind, layout="adjacent", state_dir=STATE)
    assert path.parent == data_path.parent
    assert path.name == f"{name}.{kinds.sidecar_extension(kind)}"
    assert is_ours(path)
    assert is_ours(str(path))


@given(name=file_names)
def test_any_sidecar_temp_name_is_ours_and_fits(name: str) -> None:
    tmp = atomic._temp_name(f"{name}.tsr")
    assert is_ours(tmp)
    assert "/" not in tmp
    assert len(os.fsencode(tmp)) <= 255


# --- writing and reading -----------------------------------------------------------------


@pytest.mark.usefixtures("strict_umask")
def test_adjacent_write_never_touches_the_data_file(tmp_path: Path) -> None:
    data = tmp_path / "invoice.pdf"
    data.write_bytes(b"%PDF-1.7 ...")
    os.chmod(data, 0o640)
    before = snapshot(data)

    path = write_sidecar(data, "tsr", b"token", layout="adjacent", state_dir=STATE)
    write_sidecar(data, "tsr", b"token v2", layout="adjacent", state_dir=STATE, replace=True)
    write_sidecar(data, "ots", b"anchor", layout="adjacent", state_dir=STATE)

    assert snapshot(data) == before
    assert data.read_bytes() == b"%PDF-1.7 ..."
    assert path == tmp_path / "invoice.pdf.tsr"
    assert path.read_bytes() == b"token v2"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert {p.name for p in tmp_path.iterdir()} == {
        "invoice.pdf",
        "invoice.pdf.tsr",
        "invoice.pdf.ots",
    }


def test_no_replace_keeps_the_existing_sidecar(tmp_path: Path) -> None:
    data = tmp_path / "a.txt"
    data.write_bytes(b"a")
    write_sidecar(data, "ots", b"user's own proof", layout="adjacent", state_dir=tmp_path)
    with pytest.raises(SidecarExistsError):
        write_sidecar(data, "ots", b"ours", layout="adjacent", state_dir=tmp_path)
    assert (tmp_path / "a.txt.ots").read_bytes() == b"user's own proof"


def test_adjacent_write_refuses_planted_symlink(tmp_path: Path) -> None:
    data = tmp_path / "a.txt"
    data.write_bytes(b"a")
    (tmp_path / "a.txt.tsr").symlink_to(data)  # would overwrite the data file if followed
    with pytest.raises(UnsafePathError):
        write_sidecar(data, "tsr", b"token", layout="adjacent", state_dir=STATE, replace=True)
    assert data.read_bytes() == b"a"
    assert (tmp_path / "a.txt.tsr").is_symlink()


def test_adjacent_write_refuses_a_symlinked_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.txt").write_bytes(b"a")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafePathError, match="symlink"):
        write_sidecar(tmp_path / "link" / "a.txt", "tsr", b"t", layout="adjacent", state_dir=STATE)
    assert {p.name for p in (tmp_path / "real").iterdir()} == {"a.txt"}


def test_adjacent_write_never_creates_directories_in_the_user_tree(tmp_path: Path) -> None:
    data = tmp_path / "gone" / "a.txt"
    with pytest.raises(FileAccessError, match="does not exist"):
        write_sidecar(data, "tsr", b"token", layout="adjacent", state_dir=tmp_path)
    assert not (tmp_path / "gone").exists()


@pytest.mark.usefixtures("strict_umask")
def test_mirror_write_builds_the_tree_under_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    data = Path("/srv/records/a/b.pdf")  # need not exist: mirror never looks at the data tree
    path = write_sidecar(data, "tsr", b"token", layout="mirror", state_dir=state)
    assert path == state / "mirror" / "srv" / "records" / "a" / "b.pdf.tsr"
    assert path.read_bytes() == b"token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert read_sidecar(data, "tsr", layout="mirror", state_dir=state) == b"token"


def test_mirror_write_refuses_a_symlink_inside_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "mirror").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (state / "mirror" / "srv").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError):
        write_sidecar(Path("/srv/a.txt"), "tsr", b"t", layout="mirror", state_dir=state)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_read_sidecar_absent_is_none(tmp_path: Path) -> None:
    data = tmp_path / "a.txt"
    data.write_bytes(b"a")
    assert read_sidecar(data, "tsr", layout="adjacent", state_dir=tmp_path) is None
    assert read_sidecar(data, "tsr", layout="mirror", state_dir=tmp_path / "state") is None
    write_sidecar(data, "tsr", b"token", layout="adjacent", state_dir=tmp_path)
    assert read_sidecar(data, "tsr", layout="adjacent", state_dir=tmp_path) == b"token"


def test_read_sidecar_refuses_a_symlink(tmp_path: Path) -> None:
    data = tmp_path / "a.txt"
    data.write_bytes(b"a")
    (tmp_path / "a.txt.tsr").symlink_to(data)
    with pytest.raises(UnsafePathError):
        read_sidecar(data, "tsr", layout="adjacent", state_dir=tmp_path)
