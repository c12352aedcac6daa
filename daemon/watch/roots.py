"""Is a watch root usable? What is wrong with it, and what the operator can do about it.

A watch root that is missing (not created yet, deleted, not mounted), not a directory, or
not readable by the daemon's user records nothing, silently, unless someone says so. stampd
says so in ``stampd status`` (text and ``--json``), in the health problems (systemd STATUS=),
in the metric ``stampd_watch_root_ok{root}`` and in the log, each time with what to do.

Such a problem is outside the daemon: restarting stampd does not create a directory. So it
does not stop the systemd watchdog pings (daemon/service/health.py): systemd would kill and restart
stampd every ``WatchdogSec`` for nothing, and each start would walk every other watch again.
The root is checked every second and picked up as soon as it is usable (daemon/watch/watcher.py
``check_roots``).
"""

from __future__ import annotations

import errno
import functools
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

RootKind = Literal["missing", "not_directory", "unreachable", "unreadable", "unwatched"]


@dataclass(frozen=True)
class RootProblem:
    """Why a watch root records nothing, and what to do about it."""

    #: Stable name: the log event is ``watch_root_<kind>``.
    kind: RootKind
    #: What is wrong, completing "watch root PATH …": "does not exist".
    reason: str
    #: What to do, naming the path and the user stampd runs as.
    hint: str

    def describe(self, root: Path) -> str:
        """One line for health problems, STATUS= and ``stampd status``."""
        return f"watch root {root} {self.reason}: {self.hint}"


def check_root(root: Path, *, watched: bool) -> RootProblem | None:
    """What keeps ``root`` from being walked and watched now, or None when it is fine.

    The checks are what the walk and the watch need, done the way they are done: ``stat``
    (following a symlinked root, as the scan does), opening the directory (read permission)
    and a lookup inside it (search permission). ``os.access`` would ask about the real uid,
    not the effective one, and says nothing about capabilities. ``watched`` says whether the
    inotify watch on the root is in place (daemon/watch/watcher.py).
    """
    user = _user()
    problem = _reach(root, user) or _read(root, user)
    if problem is None and not watched:
        return RootProblem(
            "unwatched",
            "has no inotify watch",
            "see the log event watch_root_unwatchable; if it says 'No space left on device',"
            " raise fs.inotify.max_user_watches or max_user_instances (sysctl);"
            " stampd retries every second",
        )
    return problem


def _reach(root: Path, user: str) -> RootProblem | None:
    """``stat`` the root: is it there, and a directory?"""
    try:
        st = root.stat()
    except FileNotFoundError:
        return RootProblem(
            "missing",
            "does not exist",
            f"create {root} or fix its permissions (stampd runs as user {user});"
            " it is picked up once it exists",
        )
    except NotADirectoryError:
        return _not_a_directory(root)
    except PermissionError as error:
        return RootProblem(
            "unreachable",
            f"cannot be reached: {error.strerror}",
            f"let user {user} (stampd runs as it) search every parent directory of {root}"
            " (the x permission); it is picked up then",
        )
    except OSError as error:
        return _unreadable(root, error, user)
    return None if stat.S_ISDIR(st.st_mode) else _not_a_directory(root)


def _read(root: Path, user: str) -> RootProblem | None:
    """Open the directory (read permission) and look inside it (search permission)."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            # A lookup through the descriptor needs search (x) permission on the directory.
            os.stat(".", dir_fd=fd)
        finally:
            os.close(fd)
    except OSError as error:
        return _unreadable(root, error, user)
    return None


def _not_a_directory(root: Path) -> RootProblem:
    return RootProblem(
        "not_directory",
        "is not a directory",
        f"replace {root} with a directory, or point watch.path at one;"
        " it is picked up once it is a directory",
    )


def _unreadable(root: Path, error: OSError, user: str) -> RootProblem:
    if error.errno in (errno.EACCES, errno.EPERM):
        hint = (
            f"give user {user} (stampd runs as it) read and search permission on {root}"
            " (chmod, a group or an ACL); it is picked up then"
        )
    else:
        hint = f"check the device or mount behind {root}; it is picked up once it can be read"
    return RootProblem("unreadable", f"is not readable: {error.strerror}", hint)


@functools.cache
def _user() -> str:
    """The user stampd runs as, by name (looked up once: hints are built every second)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
