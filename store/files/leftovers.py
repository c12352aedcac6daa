"""Temp files a killed stampd left behind, and their removal (DESIGN rule 1: no half files).

Every write goes through a hidden temp name in the target's directory
(``.NAME.stampd-<16 hex>.tmp``, :mod:`stampd.store.files.atomic`), fsynced and then renamed.
A ``kill -9`` or a power cut between the create and the rename leaves that temp file: never
a half sidecar, but litter next to the user's data that backup tools would carry forever.

Only the daemon that was running when it was written could still rename it, so a temp file
last modified before this daemon started is a leftover. It is removed only when it is
exactly ours: the name matches the pattern, it is a regular file (never a symlink, which is
not followed), and it belongs to the user stampd runs as. Anything else with a similar name
is the user's and stays (DESIGN rule 4: never touch the data).

The scan removes leftovers in the directories it lists (daemon/watch/sidecar_check.py); the
archive under the state directory, which no scan walks, is swept once at start-up.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from stampd.store.errors import StampdError
from stampd.store.files import atomic

#: ``.NAME.stampd-<token>.tmp`` as atomic.py names its temp files (the token is 8 random bytes).
_TEMP_NAME = re.compile(r"\..+\.stampd-[0-9a-f]{16}\.tmp", re.DOTALL)


def is_temp_name(name: str) -> bool:
    """Whether ``name`` has the form of stampd's temp files."""
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(directory: Path, names: list[str] | set[str], *, before: float) -> int:
    """Remove those of ``names`` in ``directory`` that are stampd temp files last modified
    before ``before`` (Unix time); the number removed. A directory that cannot be opened
    safely, or a file that vanished meanwhile, is skipped: the next scan looks again."""
    candidates = sorted(name for name in names if is_temp_name(name))
    if not candidates:
        return 0
    try:
        dir_fd = atomic.open_directory(directory)
    except (OSError, ValueError, StampdError):
        return 0  # gone, or a symlink on the way: never followed (rule 4)
    removed = 0
    try:
        for name in candidates:
            if _stale(dir_fd, name, before):
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except OSError:
                    continue
                removed += 1
    finally:
        os.close(dir_fd)
    return removed


def sweep_archive(state_dir: Path, *, before: float) -> int:
    """Remove stale temp files from every folder of ``state_dir/archive``; the number removed."""
    root = state_dir / "archive"
    try:
        folders = [entry.name for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return 0  # no archive yet
    removed = 0
    for folder in sorted(folders):
        try:
            names = [entry.name for entry in os.scandir(root / folder)]
        except OSError:
            continue
        removed += remove_stale_temps(root / folder, names, before=before)
    return removed


def _stale(dir_fd: int, name: str, before: float) -> bool:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and info.st_mtime < before
