"""``WatchFilter.accepts_name`` and ``screen_names``, the scan's pathlib-free questions, give
the same answers as ``accepts`` for every kind of pattern and name."""

from __future__ import annotations

from pathlib import Path

import pytest

from stampd.daemon.watch.filters import WatchFilter, names_ending_in

ROOT = Path("/srv/records")
NAMES = [
    "a.pdf",
    "notes.txt",
    ".hidden",
    "a.pdf.tsr",
    "a.pdf.ots",
    "a.pdf.ots.bak",
    ".a.pdf.stampd-0123456789abcdef.tmp",
    ".x.tmp",
    "report.part",
    "draft~",
    ".notes.abcdef",
    "#12345",
    "plain.tmp",
    "ünïcode.pdf",
    ".tsr",  # a suffix alone is no sidecar
    "x.tsr.pdf",
    "#notdigits",
]
DIRECTORIES = ["/srv/records", "/srv/records/docs", "/srv/records/a/.git", "/srv/records/x/y"]
PATTERNS = [
    (["**"], []),
    (["**"], ["**/.git/**"]),
    (["*.pdf"], []),
    (["**/*.pdf"], ["docs/**"]),
    (["docs/**", "x/**/*.txt"], ["**/.hidden"]),
]


@pytest.mark.parametrize(("include", "exclude"), PATTERNS)
@pytest.mark.parametrize("transient_ok", [False, True])
def test_accepts_name_agrees_with_accepts(
    include: list[str], exclude: list[str], transient_ok: bool
) -> None:
    for root in (ROOT, Path("/")):
        file_filter = WatchFilter(root, include, exclude)
        for directory in [*DIRECTORIES, "/elsewhere"]:
            for name in NAMES:
                expected = file_filter.accepts(Path(directory, name), transient_ok=transient_ok)
                got = file_filter.accepts_name(directory, name, transient_ok=transient_ok)
                assert got == expected, (root, include, exclude, directory, name)


def test_a_directory_that_only_shares_the_roots_prefix_is_outside() -> None:
    file_filter = WatchFilter(ROOT, ["**"], [])
    assert not file_filter.accepts_name("/srv/records-old", "a.pdf")
    assert file_filter.accepts_name("/srv/records", "a.pdf")


@pytest.mark.parametrize(("include", "exclude"), PATTERNS)
def test_screen_names_agrees_with_accepts_for_a_whole_listing(
    include: list[str], exclude: list[str]
) -> None:
    for root in (ROOT, Path("/")):
        file_filter = WatchFilter(root, include, exclude)
        for directory in [*DIRECTORIES, "/elsewhere"]:
            accepted, transient = file_filter.screen_names(directory, NAMES)
            assert accepted == {n for n in NAMES if file_filter.accepts(Path(directory, n))}
            assert transient == {
                n
                for n in NAMES
                if n not in accepted and file_filter.accepts(Path(directory, n), transient_ok=True)
            }, (root, include, exclude, directory)


def test_names_ending_in_finds_each_name_with_an_ending_or_a_start() -> None:
    listing = ["a.pdf", "a.pdf.tsr", ".hidden", "#1", "notes~", "tsr", "x.tsrx"]
    assert names_ending_in(listing, (".tsr", "~"), starts=".#") == [
        "a.pdf.tsr",
        ".hidden",
        "#1",
        "notes~",
    ]
    assert names_ending_in(listing, (".tsr",)) == ["a.pdf.tsr"]
    # A listing where nothing qualifies is ruled out as a whole; "/" never joins two names
    # into a match ("a" + "/" + ".tsr…" is not "a.tsr").
    assert names_ending_in(["a", "b.pdf", "c"], (".tsr", "~"), starts=".#") == []
    assert names_ending_in(["x.ts", "r"], (".tsr",)) == []
