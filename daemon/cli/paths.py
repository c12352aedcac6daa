"""Paths on the command line: what an argument names, and how a path is shown.

Every path stampd prints is in the escaped form of :mod:`stampd.store.files.pathnames`
(``caf\\351.txt`` for a name that is not UTF-8, ``a\\\\b`` for a backslash), so an argument
may be given that way too: it is taken literally when a file of that very name exists, and
read as the escaped form otherwise. A name typed the shell's way (``caf*``, or ``$'caf\\351'``)
reaches us as its own bytes and needs no escapes at all.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from stampd.store.files.pathnames import EscapeError, escape, unescape


def argument_name(text: str) -> str:
    """The name an argument denotes, as given (relative stays relative), escapes undone
    unless a file of that literal name exists (see the module docstring)."""
    if "\\" in text and not os.path.lexists(text):
        # Not the escaped form: then it is the literal name, which does not exist.
        with contextlib.suppress(EscapeError):
            return unescape(text)
    return text


def argument_path(text: str) -> Path:
    """The absolute path an argument names.

    ``abspath``, not ``resolve()``: the index holds paths as seen under the watch root, and a
    symlinked watch root must not turn into its target here.
    """
    return Path(os.path.abspath(argument_name(text)))  # noqa: PTH100 - resolve() follows links


def shown(path: str | os.PathLike[str]) -> str:
    """``path`` as stampd prints it: every byte visible, valid UTF-8, fit to feed back."""
    return escape(path)
