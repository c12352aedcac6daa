"""The one error root of stampd and the errors raised by ``stampd.store``.

Every error carries a stable ``error_class`` string: it is stored in the index
(attempts, jobs), logged, and printed by the CLI, so scripts and dashboards can
match on it. The message says what failed and where; ``hint`` says what to do.
"""

from __future__ import annotations

from typing import ClassVar


class StampdError(Exception):
    """Root of every error stampd raises on purpose."""

    error_class: ClassVar[str] = "unknown"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message

    def to_dict(self) -> dict[str, str]:
        """The error as a JSON-ready mapping (for ``--json`` output and logs)."""
        data = {"error_class": self.error_class, "message": self.message}
        if self.hint:
            data["hint"] = self.hint
        return data


class FileAccessError(StampdError):
    """A data file or sidecar could not be opened or read."""

    error_class = "io"


class UnsafePathError(StampdError):
    """A path is a symlink, not a regular file, or escapes where it must stay (DESIGN rule 4)."""

    error_class = "unsafe_path"


class SidecarExistsError(StampdError):
    """A sidecar is already present where a new one was to be created without replacing."""

    error_class = "sidecar_exists"


class IndexUnavailableError(StampdError):
    """The SQLite index is missing, unreadable, locked for too long, or from a newer stampd."""

    error_class = "index"
