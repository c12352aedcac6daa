"""stampd.daemon.watch.filters: glob semantics, fixed ignore rules, and sound directory pruning."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stampd.daemon.config.model import WatchConfig
from stampd.daemon.watch.filters import WatchFilter, is_transient

ROOT = Path("/srv/records")


def accepts(include: list[str], exclude: list[str], relative: str) -> bool:
    return WatchFilter(ROOT, include, exclude).accepts(ROOT / relative)


@pytest.mark.parametrize(
    ("pattern", "relative", "expected"),
    [
        # "**" alone matches everything, dotfiles included.
        ("**", "a.pdf", True),
        ("**", "a/b/c.pdf", True),
        ("**", ".hidden/.dot", True),
        # Anchored at the root: "*.pdf" is top level only.
        ("*.pdf", "a.pdf", True),
        ("*.pdf", "sub/a.pdf", False),
        ("*.pdf", "a.pdf.txt", False),
        ("*", ".bashrc", True),  # no special casing of dotfiles
        ("*", "a/b", False),  # "*" never crosses "/"
        # "**" at the start: zero or more leading directories.
        ("**/*.pdf", "a.pdf", True),
        ("**/*.pdf", "x/y/a.pdf", True),
        ("**/*.pdf", "x/y/a.txt", False),
        ("**/.git/**", ".git/config", True),
        ("**/.git/**", "a/.git/x", True),
        ("**/.git/**", "a/b/.git/objects/ab/cd", True),
        ("**/.git/**", "a/x.git/y", False),
        ("**/.git/**", "a/.github/y", False),
        # "**" in the middle.
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/xb", False),
        ("a/**/b", "ab", False),
        # "**" at the end.
        ("docs/**", "docs/a", True),
        ("docs/**", "docs/x/y/z", True),
        ("docs/**", "docsx/a", False),
        ("docs/**", "a/docs/b", False),
        # "**" inside a segment acts as "*".
        ("**.pdf", "a.pdf", True),
        ("**.pdf", "a/b.pdf", False),
        # "?" and classes are one character, never "/".
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[ab].txt", "b.txt", True),
        ("[ab].txt", "c.txt", False),
        ("[!ab].txt", "c.txt", True),
        ("[!ab].txt", "a.txt", False),
        ("x[!a]y", "x/y", False),
        ("[a-c]1", "b1", True),
        ("[a-c]1", "d1", False),
        ("[]]", "]", True),  # "]" first in a class is a member
        ("[!]]", "a", True),
        ("[z-a]", "m", False),  # a reversed range matches nothing, as in fnmatch
        ("[abc", "[abc", True),  # unclosed: literal
        ("a+b(c).txt", "a+b(c).txt", True),  # regex metacharacters are literal
        ("a\\b", "a\\b", True),  # no escape character
        # Normalisation: leading "/", doubled "/", trailing "/", "**/**".
        ("/a.pdf", "a.pdf", True),
        ("a//b", "a/b", True),
        ("build/", "build/x/y", True),
        ("**/**/*.pdf", "a.pdf", True),
        # Case-sensitive.
        ("*.PDF", "a.pdf", False),
    ],
)
def test_glob_semantics(pattern: str, relative: str, expected: bool) -> None:
    assert accepts([pattern], [], relative) is expected


@pytest.mark.parametrize(
    ("include", "exclude", "relative", "expected"),
    [
        (["**"], [], "a.pdf", True),
        (["**"], ["**/.git/**"], "repo/.git/HEAD", False),
        (["**"], ["**/.git/**"], "repo/src/main.c", True),
        (["**"], ["**/*.swp", "**/.git/**"], "notes.txt", True),
        (["**/*.pdf", "**/*.xml"], [], "a/b.xml", True),
        (["**/*.pdf", "**/*.xml"], [], "a/b.txt", False),
        (["**/*.pdf"], ["drafts/**"], "drafts/a.pdf", False),
        (["**/*.pdf"], ["drafts/**"], "final/drafts/a.pdf", True),
        (["**"], ["**"], "a", False),  # exclude wins
        ([], [], "a", False),  # nothing included
    ],
)
def test_include_exclude(
    include: list[str], exclude: list[str], relative: str, expected: bool
) -> None:
    assert accepts(include, exclude, relative) is expected


@pytest.mark.parametrize(
    "path",
    [
        ROOT,  # the root itself is not a file of the watch
        Path("/srv"),
        Path("/srv/other/a.pdf"),
        Path("/srv/recordsX/a.pdf"),  # a string prefix is not a parent
        Path("/srv/records/../other/a.pdf"),
        Path("/srv/records/a/../../other/a.pdf"),
    ],
)
def test_outside_root_is_never_accepted(path: Path) -> None:
    assert not WatchFilter(ROOT, ["**"], []).accepts(path)


@pytest.mark.parametrize(
    "relative",
    [
        "a.pdf.tsr",
        "d/a.pdf.ots",
        "a.pdf.p7s",
        "a.pdf.ers",
        "a.pdf.ots.bak",
        ".a.pdf.stampd-0123456789abcdef.tmp",
    ],
)
def test_our_own_files_are_never_accepted(relative: str) -> None:
    assert not accepts(["**"], [], relative)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # rsync: ".NAME.XXXXXX", six alphanumerics after the last dot.
        (".notes.a1B2c3", True),
        (".report.pdf.Zx9QwE", True),
        (".notes.backup", True),  # the documented false positive of the heuristic (§3.3)
        (".notes.backu", False),
        (".notes.a1B2c3d", False),
        ("notes.a1B2c3", False),  # no leading dot
        (".a1B2c3", False),  # no name between the dots
        (".notes.a1-2c3", False),
        # mkstemp ".*.tmp".
        (".report.tmp", True),
        ("..tmp", True),
        ("report.tmp", False),
        (".tmp", False),
        (".report.tmpx", False),
        # partial downloads, swap files, editor backups.
        ("film.mkv.part", True),
        ("film.mkv.crdownload", True),
        (".notes.txt.swp", True),
        ("notes.txt~", True),
        ("part", False),
        ("report.partial", False),
        ("notes.swp.txt", False),
        ("~notes", False),
        # O_TMPFILE + linkat phantoms: "#<inode>".
        ("#1234567", True),
        ("#", False),
        ("#12a", False),
        ("#1 notes", False),
        # ordinary names.
        ("invoice.pdf", False),
        (".bashrc", False),
    ],
)
def test_is_transient(name: str, expected: bool) -> None:
    assert is_transient(name) is expected


def test_transient_names_are_rejected_unless_allowed() -> None:
    watch_filter = WatchFilter(ROOT, ["**"], [])
    assert not watch_filter.accepts(ROOT / "d/.notes.backup")
    # The scan may let one through once it has been left alone long enough (§3.3).
    assert watch_filter.accepts(ROOT / "d/.notes.backup", transient_ok=True)
    # Our own files stay out regardless, and so do excluded ones.
    assert not watch_filter.accepts(ROOT / "d/a.pdf.ots", transient_ok=True)
    assert not WatchFilter(ROOT, ["**"], ["**/.*"]).accepts(ROOT / ".x.tmp", transient_ok=True)


def test_transient_directory_names_do_not_matter() -> None:
    assert accepts(["**"], [], ".cache.abcdef/file.txt")


def test_for_watch() -> None:
    watch = WatchConfig(
        path=ROOT,
        evidence=("tsr",),
        include=("**/*.pdf",),
        exclude=("old/**",),
        quiet=2.0,
        sidecars="adjacent",
        max_wait=3600.0,
    )
    watch_filter = WatchFilter.for_watch(watch)
    assert watch_filter.accepts(ROOT / "new/a.pdf")
    assert not watch_filter.accepts(ROOT / "old/a.pdf")
    assert not watch_filter.accepts(ROOT / "new/a.txt")


@pytest.mark.parametrize(
    ("include", "exclude", "directory", "expected"),
    [
        (["**"], ["**/.git/**"], ".git", True),
        (["**"], ["**/.git/**"], "a/b/.git", True),
        (["**"], ["**/.git/**"], "a/b/.git/objects", True),
        (["**"], ["**/.git/**"], "a/.github", False),
        (["**"], ["**/.git/**"], "", False),  # the root
        (["**"], ["**/*.swp"], "a", False),
        (["**"], ["cache/**"], "cache", True),
        (["**"], ["cache/**"], "a/cache", False),
        (["**"], ["**"], "", True),
        (["**"], ["*/tmp/**"], "a/tmp", True),
        (["**"], ["*/tmp/**"], "tmp", False),
        (["**"], ["a/*"], "a", False),  # only direct children excluded; a/b/c is not
        # Include side: no include pattern can match below the directory.
        (["docs/**"], [], "src", True),
        (["docs/**"], [], "docs", False),
        (["docs/**"], [], "docs/x", False),
        (["*.pdf"], [], "sub", True),  # top-level files only
        (["*.pdf"], [], "", False),
        (["a/b/*.pdf"], [], "a", False),
        (["a/b/*.pdf"], [], "a/b", False),
        (["a/b/*.pdf"], [], "a/b/c", True),
        (["a/*/x"], [], "a/q", False),
        (["**/x"], [], "deep/down", False),
        ([], [], "", True),
    ],
)
def test_prunes_dir(include: list[str], exclude: list[str], directory: str, expected: bool) -> None:
    path = ROOT / directory if directory else ROOT
    assert WatchFilter(ROOT, include, exclude).prunes_dir(path) is expected


def test_prunes_everything_outside_the_root() -> None:
    assert WatchFilter(ROOT, ["**"], []).prunes_dir(Path("/srv/other"))


# Small alphabets, so that generated patterns often match generated paths.
PATH_PARTS = st.sampled_from(["a", "b", ".git", "x.pdf", "[", "é"])
PATTERN_PARTS = st.sampled_from(["**", "*", "a", "b", "?", "[!a]", "*.pdf", ".git", "["])
RELATIVE_PATHS = st.lists(PATH_PARTS, min_size=1, max_size=5)
PATTERNS = st.lists(PATTERN_PARTS, min_size=1, max_size=4).map("/".join)


def oracle(pattern: str, parts: list[str]) -> bool:
    """Reference matcher: segment by segment, "**" absorbing any number of segments, and
    fnmatch within a segment (equivalent there, as segments contain no "/")."""
    segments = pattern.split("/")

    def match(i: int, j: int) -> bool:
        if i == len(segments):
            return j == len(parts)
        if segments[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        return j < len(parts) and fnmatchcase(parts[j], segments[i]) and match(i + 1, j + 1)

    return match(0, 0)


@given(PATTERNS, RELATIVE_PATHS)
def test_glob_agrees_with_a_segment_matcher(pattern: str, parts: list[str]) -> None:
    relative = "/".join(parts)
    assert accepts([pattern], [], relative) is oracle(pattern, parts), (pattern, relative)


@settings(max_examples=500)
@given(
    st.lists(PATTERNS, max_size=3),
    st.lists(PATTERNS, max_size=3),
    RELATIVE_PATHS,
)
def test_prunes_dir_never_hides_an_accepted_file(
    include: list[str], exclude: list[str], parts: list[str]
) -> None:
    watch_filter = WatchFilter(ROOT, include, exclude)
    path = ROOT.joinpath(*parts)
    if not watch_filter.accepts(path):
        return
    for depth in range(len(parts)):  # the root and every directory above the file
        directory = ROOT.joinpath(*parts[:depth])
        assert not watch_filter.prunes_dir(directory), (include, exclude, path, directory)
