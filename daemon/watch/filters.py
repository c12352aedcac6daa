"""Which paths of a watch are candidates for stamping: ``include``/``exclude`` globs plus names
that are never stamped (stampd's own files, other tools' in-progress writes).

Filtering happens here rather than in watchdog's ``PatternMatchingEventHandler``: its default
``ignore_policy`` drops a move when either path is ignored, which loses the rename that is the
only event an atomic save gives the final name (reference/watching-and-service.md §2).

Pattern syntax, for ``include`` and ``exclude`` in ``[[watch]]``:

- A pattern is matched against the file's path **relative to the watch root**, with ``/``
  between directories, and must match that whole path. ``*.pdf`` matches ``a.pdf`` at the top
  only; write ``**/*.pdf`` for any depth.
- ``**`` as a whole segment matches zero or more directories: ``**`` matches everything,
  ``**/.git/**`` matches ``.git/config`` and ``a/.git/x`` (and a file named ``.git``),
  ``a/**/b`` matches ``a/b`` and ``a/x/y/b``. Elsewhere in a segment (``**.pdf``) it acts as
  ``*``.
- ``*`` matches any characters within one segment (never ``/``), including a leading dot:
  ``*`` matches ``.hidden``. ``?`` matches one character other than ``/``.
- ``[abc]``, ``[a-z]``, ``[!abc]`` are character classes as in :mod:`fnmatch` (never matching
  ``/``); a ``[`` without a closing ``]`` is literal. There is no escape character.
- Matching is case-sensitive. A leading ``/`` changes nothing (every pattern is anchored at the
  root); a trailing ``/`` means everything below: ``build/`` is ``build/**``.
- A file is a candidate when some ``include`` pattern matches and no ``exclude`` pattern does.

Whatever the patterns say, these names are never candidates: stampd's own sidecars, their
temporary files and ``*.ots.bak`` (:func:`stampd.store.files.sidecar.is_ours`), and the transient
names of :func:`is_transient`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from stampd.daemon.config.model import WatchConfig
from stampd.store.files.sidecar import data_name_of, is_ours, sidecar_suffixes

# Reference §3.3, names of in-progress writes by other tools. The rsync and mkstemp forms are
# heuristics (`.notes.backup` looks like rsync's `.notes.XXXXXX`), hence "transient" rather
# than "never": the reference has such a name stamped once it is still there after an hour.
_TRANSIENT = re.compile(
    r"""
      \..+\.[A-Za-z0-9]{6}       # rsync: .NAME.XXXXXX, six random characters after the last dot
    | \..*\.tmp                  # mkstemp-style temp files: .*.tmp
    | .*\.(?:part|crdownload|swp)  # partial downloads (Firefox, Chrome), vim swap files
    | .*~                        # editor backups
    | \#[0-9]+                   # O_TMPFILE + linkat phantoms: #<inode> (reference §1)
    """,
    re.VERBOSE | re.DOTALL,
)

#: The endings of the _TRANSIENT forms that do not start with "." or "#".
_TRANSIENT_ENDS = (".part", ".crdownload", ".swp", "~")


def is_transient(name: str) -> bool:
    """Whether the file name ``name`` looks like another tool's in-progress write (reference
    §3.3): rsync ``.name.XXXXXX``, mkstemp ``.*.tmp``, ``*.part``, ``*.crdownload``,
    ``*.swp``, ``*~`` or an ``O_TMPFILE`` phantom ``#<digits>``.

    The rsync and mkstemp forms also match some ordinary names (``.notes.backup``); the scan
    may accept such a file once it has been left alone long enough.
    """
    return _TRANSIENT.fullmatch(name) is not None


@dataclass(frozen=True)
class _Pattern:
    """One glob, compiled: the whole-path regex, and per segment a regex or None for ``**``."""

    regex: re.Pattern[str]
    segments: tuple[re.Pattern[str] | None, ...]

    @property
    def covers_subtrees(self) -> bool:
        """Whether it ends in a ``**`` segment, so that matching a directory matches all below."""
        return self.segments[-1] is None


def _segments(pattern: str) -> list[str]:
    """The segments of ``pattern``, normalised as the module docstring says."""
    if pattern.endswith("/"):
        pattern += "**"
    parts: list[str] = []
    for part in pattern.split("/"):
        # Empty segments (leading, doubled "/") are dropped; "**/**" is the same as "**".
        if part and not (part == "**" and parts and parts[-1] == "**"):
            parts.append(part)
    return parts or ["**"]


def _segment_regex(segment: str) -> str:
    """Regex source for one segment that is not ``**``: ``*``, ``?`` and ``[...]`` never
    match ``/``."""
    out: list[str] = []
    i, n = 0, len(segment)
    while i < n:
        char = segment[i]
        i += 1
        if char == "*":
            while i < n and segment[i] == "*":  # "**" inside a segment acts as "*"
                i += 1
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := _class_end(segment, i)) is not None:
            out.append(_class_regex(segment[i:end]))
            i = end + 1
        else:
            out.append(re.escape(char))
    return "".join(out)


def _class_end(segment: str, start: int) -> int | None:
    """Index of the ``]`` closing a class whose body starts at ``start``; None if unclosed.
    As in fnmatch, a ``]`` right after ``[`` or ``[!`` is a member, not the end."""
    i = start
    if i < len(segment) and segment[i] == "!":
        i += 1
    if i < len(segment) and segment[i] == "]":
        i += 1
    end = segment.find("]", i)
    return None if end < 0 else end


def _class_regex(body: str) -> str:
    """Regex source for the class ``[body]``, built item by item so no pattern can produce an
    invalid regex: a reversed range (``z-a``) matches nothing, as in fnmatch."""
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    items: list[str] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            if low <= high:
                items.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            items.append(re.escape(body[i]))
            i += 1
    if negate:
        return "[^/" + "".join(items) + "]"
    return "[" + "".join(items) + "]" if items else "(?!)"


def _compile(pattern: str) -> _Pattern:
    """Translate one glob into a whole-relative-path regex (semantics: module docstring)."""
    parts = _segments(pattern)
    segments = tuple(None if part == "**" else re.compile(_segment_regex(part)) for part in parts)
    source: list[str] = []
    last = len(parts) - 1
    for index, segment in enumerate(segments):
        if segment is not None:
            # A "/" joins this segment to the previous one, unless a "**" before it already
            # ends in one.
            if index > 0 and segments[index - 1] is not None:
                source.append("/")
            source.append(segment.pattern)
        elif index == last == 0:
            source.append(".*")
        elif index == 0:
            source.append("(?:.*/)?")  # "**/x": x at any depth, including the top
        elif index == last:
            source.append("(?:/.*)?")  # "x/**": x itself and everything below it
        else:
            source.append("/(?:.*/)?")  # "x/**/y": y directly in x or any depth below
    return _Pattern(re.compile("".join(source), re.DOTALL), segments)


class WatchFilter:
    """The include/exclude patterns of one watch, compiled once, plus the fixed ignore rules."""

    def __init__(self, root: Path, include: Sequence[str], exclude: Sequence[str]) -> None:
        """``root`` is the watch's absolute path; patterns follow the module docstring."""
        self.root = root
        self._include = tuple(_compile(pattern) for pattern in include)
        self._exclude = tuple(_compile(pattern) for pattern in exclude)
        # For screen_names: the text every walked path under the root starts with, and whether
        # the patterns accept every path (include ["**"], the default, and no exclude), so the
        # answer comes from the name alone.
        text = str(root)
        self._prefix = text if text.endswith("/") else text + "/"
        self._everything = not self._exclude and any(p.segments == (None,) for p in self._include)

    @classmethod
    def for_watch(cls, watch: WatchConfig) -> WatchFilter:
        """The filter of a ``[[watch]]``."""
        return cls(watch.path, watch.include, watch.exclude)

    def accepts(self, path: Path, *, transient_ok: bool = False) -> bool:
        """Whether the file ``path`` (absolute) is a candidate: strictly under the root, not
        one of stampd's own files, not transient, matched by ``include`` and not by
        ``exclude``. Name-based only, no I/O.

        ``transient_ok=True`` lets a transient-looking name through: the caller (the scan)
        decides it has been left alone long enough to be a real file (reference §3.3).
        """
        relative = self._relative(path)
        if relative is None or not relative.parts:
            return False
        name = relative.name
        if is_ours(name) or (not transient_ok and is_transient(name)):
            return False
        text = relative.as_posix()
        return any(p.regex.fullmatch(text) for p in self._include) and not any(
            p.regex.fullmatch(text) for p in self._exclude
        )

    def accepts_name(self, directory: str, name: str, *, transient_ok: bool = False) -> bool:
        """:meth:`accepts` for the file ``name`` in ``directory`` (an absolute path as the
        scan walks it, no ``..``), without pathlib: :meth:`screen_names` for one name."""
        accepted, transient = self.screen_names(directory, (name,))
        return name in accepted or (transient_ok and name in transient)

    def screen_names(self, directory: str, names: Collection[str]) -> tuple[set[str], set[str]]:
        """Which of the files ``names`` in ``directory`` (an absolute path as the scan walks
        it, no ``..``) :meth:`accepts` takes: ``(accepted, transient)``, the second being the
        transient-looking names it takes only with ``transient_ok``.

        The scan asks this for every listing: pathlib's parsing and ``relative_to`` per file
        were 35 µs of GIL time per file in the daemon (issue 13's profile). Only a name that
        starts with "." or "#" or has one of the endings of our files or of the transient
        forms needs a closer look, and a listing without any costs no Python per name.
        """
        if directory.startswith(self._prefix):
            relative_dir = directory[len(self._prefix) :]
        elif directory + "/" == self._prefix:
            relative_dir = ""
        else:
            return self._screen_paths(directory, names)
        # Every name of ours ends in ".tmp" or a sidecar suffix; every transient form starts
        # with "." or "#" or ends in one of _TRANSIENT_ENDS.
        suspects = names_ending_in(
            names, (*sidecar_suffixes(backups=True), ".tmp", *_TRANSIENT_ENDS), starts=".#"
        )
        plain = set(names).difference(suspects)
        if self._everything:
            accepted = plain
        else:
            accepted = {name for name in plain if self._matches(relative_dir, name)}
        transient: set[str] = set()
        for name in suspects:
            # is_ours without its PurePath: a temp file of ours ends in ".tmp"; a sidecar or
            # a backup ends in a suffix data_name_of knows.
            if (name.endswith(".tmp") and is_ours(name)) or data_name_of(
                name, backups=True
            ) is not None:
                continue
            if not is_transient(name):
                if self._everything or self._matches(relative_dir, name):
                    accepted.add(name)
            elif self._matches(relative_dir, name):
                transient.add(name)
        return accepted, transient

    def _matches(self, relative_dir: str, name: str) -> bool:
        """Whether the patterns take ``relative_dir/name`` (relative to the root)."""
        text = f"{relative_dir}/{name}" if relative_dir else name
        return any(p.regex.fullmatch(text) for p in self._include) and not any(
            p.regex.fullmatch(text) for p in self._exclude
        )

    def _screen_paths(self, directory: str, names: Collection[str]) -> tuple[set[str], set[str]]:
        """:meth:`screen_names` through :meth:`accepts` (a directory not under the root)."""
        accepted: set[str] = set()
        transient: set[str] = set()
        for name in names:
            path = Path(directory, name)
            if self.accepts(path):
                accepted.add(name)
            elif self.accepts(path, transient_ok=True):
                transient.add(name)
        return accepted, transient

    def prunes_dir(self, path: Path) -> bool:
        """Whether no file below the directory ``path`` can be accepted, so a scan need not
        descend: an ``exclude`` pattern ending in ``/**`` matches the directory (e.g.
        ``**/.git/**`` and any ``.git``), or no ``include`` pattern can match below it (e.g.
        ``docs/**`` and ``src``). Sound, not complete: when unsure it returns False.
        """
        if self._everything:
            # Everything is accepted, so nothing strictly below the root is pruned: the scan
            # asks for every directory, and pathlib's relative_to was 15 µs of it.
            text = str(path)
            if text.startswith(self._prefix) and "/.." not in text:
                return False
        relative = self._relative(path)
        if relative is None:
            return True  # nothing outside the root is ever accepted
        text = relative.as_posix() if relative.parts else ""
        # If "P/**" matches D, then D is P's match plus an optional "/rest", so D/anything
        # matches "P/**" too.
        if any(p.covers_subtrees and p.regex.fullmatch(text) for p in self._exclude):
            return True
        return not any(_may_match_below(p, relative.parts) for p in self._include)

    def _relative(self, path: Path) -> Path | None:
        """``path`` relative to the root, or None when it is not at or below the root."""
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return None
        # relative_to is lexical; "root/../x" must not count as under the root.
        return None if ".." in relative.parts else relative


def names_ending_in(
    names: Collection[str], endings: tuple[str, ...], *, starts: str = ""
) -> list[str]:
    """Those of ``names`` (one directory's listing) that end in one of ``endings`` or start
    with one of the characters of ``starts``.

    One substring search per ending over the joined listing rules out a whole directory at
    once (a name never holds "/"), so a listing where no name qualifies, the usual case,
    costs no Python per name; ``str.endswith`` per name was about 1,400 instructions a file
    (callgrind), a tenth of a restart's scan without the index.
    """
    joined = "/" + "/".join(names) + "/"
    if not any(ending + "/" in joined for ending in endings) and not any(
        "/" + char in joined for char in starts
    ):
        return []
    return [name for name in names if name.endswith(endings) or name[:1] in starts]


def _may_match_below(pattern: _Pattern, directory: tuple[str, ...]) -> bool:
    """Whether ``pattern`` might match some path ``directory/...`` (at least one more segment).
    Conservative: a ``**`` reached while walking the directory's segments means yes."""
    for index, part in enumerate(directory):
        if index >= len(pattern.segments):
            return False
        segment = pattern.segments[index]
        if segment is None:
            return True
        if not segment.fullmatch(part):
            return False
    return len(pattern.segments) > len(directory)
