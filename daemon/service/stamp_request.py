"""What a control request's path means, and why ``stamp`` will not record one.

Paths cross the control socket in the escaped form of store/files/pathnames.py, as every path
stampd prints (a name that is not UTF-8 survives the trip). ``stamp`` records only a regular
file under a watch that its filters accept; every other path gets a :class:`Refusal` with an
:class:`~stampd.store.errors.ErrorClass` and, where there is one, what to do instead. One
refused path never stops the others of the same request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stampd.daemon.service.replies import StampRefusal, StampRefusalError
from stampd.daemon.watch.hasher import Retry, Skipped, Unreadable
from stampd.daemon.watch.runtime import Watches, WatchRuntime
from stampd.store.errors import ErrorClass
from stampd.store.files.pathnames import EscapeError, escape, unescape
from stampd.store.files.sidecar import data_name_of, is_ours


@dataclass(frozen=True)
class Refusal:
    """Why ``stamp`` did not record one of its paths (the others go on)."""

    error_class: ErrorClass
    message: str
    hint: str | None = None

    def reply(self, path: str) -> StampRefusal:
        """The result entry for the requested ``path`` (as the request spelled it)."""
        error: StampRefusalError = {"error_class": self.error_class, "message": self.message}
        if self.hint:
            error["hint"] = self.hint
        return {"path": path, "recorded": False, "error": error}


@dataclass(frozen=True)
class StampTarget:
    """A file ``stamp`` may record: its path, its watch and the watch root's device."""

    path: Path
    watch: WatchRuntime
    root_dev: int


def requested_path(text: str) -> Path | Refusal:
    """The path a control request names (in the escaped form of store/files/pathnames.py)."""
    try:
        name = unescape(text)
    except EscapeError as error:
        return Refusal(ErrorClass.BAD_REQUEST, f"{text}: {error}")
    if not name.startswith("/") or "\0" in name:
        return Refusal(ErrorClass.BAD_REQUEST, f"{text} is not an absolute path")
    return Path(os.path.normpath(name))


def stamp_target(watches: Watches, text: str) -> StampTarget | Refusal:
    """The file ``stamp`` names and its watch, or why it cannot be stamped."""
    path = requested_path(text)
    if isinstance(path, Refusal):
        return path
    watch = watches.of(path)
    if watch is None or path == watch.root:
        return Refusal(
            ErrorClass.NOT_WATCHED,
            f"{escape(path)} is not under a watch",
            "stampd records only files under a [[watch]] path of its configuration",
        )
    refusal = refusal_in(watch, path)
    if refusal is not None:
        return refusal
    assert watch.root_dev is not None  # refusal_in checked it
    return StampTarget(path, watch, watch.root_dev)


def refusal_in(watch: WatchRuntime, path: Path) -> Refusal | None:
    """Why ``stamp`` will not record ``path`` of ``watch``, or None."""
    shown = escape(path)
    if is_ours(path.name):
        data_name = data_name_of(path.name, backups=True)
        if data_name is None:
            return Refusal(
                ErrorClass.OURS, f"{shown} is a temporary file stampd writes, not one to stamp"
            )
        data = path.with_name(data_name)
        return Refusal(
            ErrorClass.SIDECAR,
            f"{shown} is a sidecar: the proof stampd keeps for {escape(data)}, not a file to stamp",
            f"stamp {escape(data)} itself; its proofs are written next to it",
        )
    # transient_ok: a name like `x.part` is a temporary file's only to a watcher; named by
    # the operator, it is the file they mean.
    if not watch.filter.accepts(path, transient_ok=True):
        return Refusal(
            ErrorClass.EXCLUDED,
            f"{shown} is left out by the include/exclude patterns of the watch"
            f" {escape(watch.root)}",
        )
    if watch.root_dev is None:
        return Refusal(
            ErrorClass.ROOT_MISSING, f"the watch root {escape(watch.root)} does not exist"
        )
    return None


def refusal_after_hashing(path: Path, outcome: Unreadable | Retry | Skipped) -> Refusal:
    """Why a file ``stamp`` tried to hash was not recorded after all."""
    shown = escape(path)
    if isinstance(outcome, Unreadable):
        return Refusal(ErrorClass(outcome.error_class), f"{shown}: {outcome.message}")
    if isinstance(outcome, Retry):
        return Refusal(
            ErrorClass.CHANGING,
            f"{shown} changed while it was read",
            "stamp it once the writer is done",
        )
    if outcome.reason == "gone":
        return Refusal(ErrorClass.NOT_FOUND, f"{shown}: no such file")
    return Refusal(ErrorClass.SKIPPED, f"{shown}: {outcome.reason}")
