"""URLs without what may hide a secret (DESIGN rule 7): for the logs and for the CLI.

Apart from :mod:`.logs` so that ``stampd providers`` and ``stampd config check``, which print
TSA URLs, do not load structlog (and what it loads) to scrub them (DESIGN §11: what a command
does not need stays off its start-up).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

#: What stands in for a redacted value.
REDACTED = "[REDACTED]"


def scrub_url(url: str) -> str:
    """A URL without userinfo or query string (where tokens like to hide)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    query = REDACTED if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, query, ""))
