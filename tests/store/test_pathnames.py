"""File names as bytes: the escaped form the index stores and the CLI prints (pathnames.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stampd.store.files.pathnames import EscapeError, escape, unescape
from stampd.store.index import queries
from stampd.store.index.database import Index, index_path, open_reader
from stampd.store.index.jobs import due_jobs
from stampd.store.index.scan_rows import live_rows, present_under, subtree_bounds
from stampd.store.index.schema import migrations
from tests.conftest import settled

A64, B128 = "a" * 64, "b" * 128
LATIN1 = os.fsdecode(b"caf\xe9.txt")  # what os.listdir gives for an old Samba share's name


def name_bytes() -> st.SearchStrategy[bytes]:
    # Any byte but "/" and NUL, as Linux allows in a name.
    return st.binary(min_size=1, max_size=40).map(
        lambda raw: raw.replace(b"/", b"_").replace(b"\0", b"_")
    )


@given(name_bytes())
def test_every_name_round_trips_and_the_escaped_form_is_valid_utf8(raw: bytes) -> None:
    name = os.fsdecode(raw)
    text = escape(name)
    text.encode("utf-8")  # strict: no surrogate survives
    assert unescape(text) == name
    assert os.fsencode(unescape(text)) == raw


@given(st.lists(name_bytes(), min_size=1, max_size=5), st.lists(name_bytes(), max_size=3))
def test_escaping_commutes_with_joining_paths(parts: list[bytes], more: list[bytes]) -> None:
    # What makes directory and subtree queries on the escaped column exact.
    directory = "/" + "/".join(os.fsdecode(p) for p in parts)
    below = "/".join([directory, *(os.fsdecode(p) for p in more)])
    assert escape(below) == "/".join([escape(directory), *(escape(os.fsdecode(p)) for p in more)])
    exact, low, high = subtree_bounds(Path(directory))
    text = escape(below)
    assert text == exact or low <= text < high


@given(st.text(max_size=30))
def test_unescape_of_any_text_either_fails_cleanly_or_round_trips(text: str) -> None:
    try:
        name = unescape(text)
    except EscapeError:
        return
    assert unescape(escape(name)) == name


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"plain.txt", "plain.txt"),
        ("é-ok".encode(), "é-ok"),
        (b"a b", "a b"),
        (b"caf\xe9.txt", "caf\\351.txt"),
        (b"back\\slash", "back\\\\slash"),
        (b"nl\nx", "nl\\nx"),
        (b"tab\tx", "tab\\tx"),
        (b"c1\xc2\x9bx", "c1\\302\\233x"),  # a C1 control is valid UTF-8 but not printable
        (b"del\x7f", "del\\177"),
    ],
)
def test_the_escapes_are_those_of_ls_b(raw: bytes, shown: str) -> None:
    assert escape(os.fsdecode(raw)) == shown


def test_agrees_with_gnu_ls_b_except_for_spaces(tmp_path: Path) -> None:
    names = [b"caf\xe9.txt", b"back\\slash", b"nl\nx", b"tab\tx", b"c1\xc2\x9bx", "é".encode()]
    for raw in names:
        Path(os.fsdecode(os.fsencode(tmp_path) + b"/" + raw)).write_bytes(b"")
    listed = subprocess.run(
        ["ls", "-b", str(tmp_path)], capture_output=True, check=True, env={"LC_ALL": "C.UTF-8"}
    ).stdout.decode()
    assert sorted(listed.splitlines()) == sorted(escape(os.fsdecode(raw)) for raw in names)


def test_ls_b_output_with_an_escaped_space_is_accepted() -> None:
    assert unescape("a\\ b") == "a b"


@pytest.mark.parametrize("bad", ["trailing\\", "\\x41", "\\400", "\\12"])
def test_a_backslash_that_starts_no_escape_is_an_error(bad: str) -> None:
    with pytest.raises(EscapeError):
        unescape(bad)


def test_the_index_stores_a_latin1_name_losslessly(tmp_path: Path) -> None:
    root = Path("/srv/share")
    path = root / "Archiv" / LATIN1
    with Index.open(index_path(tmp_path)) as index:
        watch = index.ensure_watch(root)
        [recorded] = index.record_settled(
            [settled(watch, path, sha256=A64, sha512=B128, evidence=("tsr",))]
        )
        assert recorded.outcome == "new_file"
        # The writer's own reads give the name back as Python has it.
        assert set(live_rows(index.conn, path.parent, device=0)) == {LATIN1}
        assert present_under(index.conn, root) == [(recorded.file_id, path)]
        [job] = due_jobs(index.conn, "tsr", now="9999", limit=10)
        assert job.path == path
        assert os.fsencode(job.path).endswith(b"caf\xe9.txt")
        # The same content again at the same name is unchanged, not a new file.
        [again] = index.record_settled([settled(watch, path, sha256=A64, sha512=B128)])
        assert again.outcome == "unchanged"
        assert index.mark_missing([path]) == 1
    reader = open_reader(index_path(tmp_path))
    try:
        [listing] = queries.list_files(reader, root / "Archiv")
        detail = queries.file_detail(reader, path)
    finally:
        reader.close()
    assert listing.path == "/srv/share/Archiv/caf\\351.txt"
    assert detail is not None
    assert detail.path == listing.path


def test_the_migration_escapes_backslashes_stored_before_it(tmp_path: Path) -> None:
    path = index_path(tmp_path)
    conn = sqlite3.connect(path)
    from sqlite_utils import Database  # noqa: PLC0415

    migrations.apply(Database(conn), stop_before="0002_escaped_paths")
    conn.executemany(
        "INSERT INTO watches (id, path, added_at) VALUES (?, ?, 'x')", [(1, "/srv/w\\x")]
    )
    # "a\\b" (two backslashes) becomes "a\\\\b"; "a\b" becomes "a\\b", the other's old text.
    rows = [(1, "/srv/w\\x/a\\\\b"), (2, "/srv/w\\x/a\\b"), (3, "/srv/w\\x/plain")]
    conn.executemany(
        "INSERT INTO files (id, watch_id, path, dir, first_seen_at, updated_at)"
        " VALUES (?, 1, ?, '/srv/w\\x', 'x', 'x')",
        rows,
    )
    conn.commit()
    conn.close()
    with Index.open(path) as index:
        stored = dict(index.conn.execute("SELECT id, path FROM files").fetchall())
        dirs = {d for (d,) in index.conn.execute("SELECT dir FROM files")}
        assert index.conn.execute("SELECT path FROM watches").fetchone()[0] == "/srv/w\\\\x"
        names = set(live_rows(index.conn, Path("/srv/w\\x"), device=0))
    assert stored == {
        1: "/srv/w\\\\x/a\\\\\\\\b",
        2: "/srv/w\\\\x/a\\\\b",
        3: "/srv/w\\\\x/plain",
    }
    assert dirs == {"/srv/w\\\\x"}
    assert names == {"a\\\\b", "a\\b", "plain"}
