"""The one error root of stampd and the errors raised by ``stampd.store``.

Every error carries a stable ``error_class`` string: it is stored in the index
(attempts, jobs), logged, and printed by the CLI, so scripts and dashboards can
match on it. The message says what failed and where; ``hint`` says what to do.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    """Every ``error_class`` stampd stores, logs, prints or counts: one catalogue, stable strings.

    Scripts and dashboards match on these, so a value is never renamed (DESIGN §8: extend,
    don't rename). The groups follow where the class appears.
    """

    # One attempt at one provider (DESIGN §6); the ``attempts`` table and the
    # ``stampd_stamp_requests_total{result}`` metric.
    NETWORK = "network"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http_status"
    RATE_LIMITED = "rate_limited"
    QUOTA = "quota"
    AUTH = "auth"
    PARSE = "parse"
    REJECTED = "rejected"
    VERIFY = "verify"
    UNKNOWN = "unknown"
    # A job's round that ended without a provider's answer (``jobs.last_error_class``).
    #: Every provider was resting or asked us to wait.
    UNAVAILABLE = "unavailable"
    #: The version's content is gone, so a digest it lacks cannot be computed (job cancelled).
    CONTENT_GONE = "content_gone"
    # Files, sidecars, the archive and the index.
    IO = "io"
    UNSAFE_PATH = "unsafe_path"
    SIDECAR_EXISTS = "sidecar_exists"
    INDEX = "index"
    TRUST = "trust"
    # Configuration and the service around it.
    CONFIG = "config"
    METRICS = "metrics"
    CONTROL_SOCKET_IN_USE = "control_socket_in_use"
    DAEMON_UNREACHABLE = "daemon_unreachable"
    BAD_REQUEST = "bad_request"
    FORBIDDEN = "forbidden"
    INTERNAL = "internal"
    REFUSED = "refused"
    # Why ``stampd stamp`` did not record a path (the other paths go on).
    NOT_WATCHED = "not_watched"
    NOT_FOUND = "not_found"
    OURS = "ours"
    SIDECAR = "sidecar"
    EXCLUDED = "excluded"
    ROOT_MISSING = "root_missing"
    CHANGING = "changing"
    SKIPPED = "skipped"
    # Queries.
    NOT_INDEXED = "not_indexed"


#: Attempt failures that more tries will not fix without an operator: credentials, paid quota.
NO_RETRY: frozenset[ErrorClass] = frozenset({ErrorClass.AUTH, ErrorClass.QUOTA})


class StampdError(Exception):
    """Root of every error stampd raises on purpose."""

    #: Set by each subclass; an instance may carry its own (a provider's failure says which
    #: of the attempt classes it is), so this is not a ClassVar.
    error_class: str = ErrorClass.UNKNOWN

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

    error_class = ErrorClass.IO


class UnsafePathError(StampdError):
    """A path is a symlink, not a regular file, or escapes where it must stay (DESIGN rule 4)."""

    error_class = ErrorClass.UNSAFE_PATH


class SidecarExistsError(StampdError):
    """A sidecar is already present where a new one was to be created without replacing."""

    error_class = ErrorClass.SIDECAR_EXISTS


class IndexUnavailableError(StampdError):
    """The SQLite index is missing, unreadable, locked for too long, or from a newer stampd."""

    error_class = ErrorClass.INDEX
