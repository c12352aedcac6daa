"""Logging: structlog, JSON lines for journald or console rendering on a terminal.

Follows reference/watching-and-service.md §5.1:
- one JSON object per line on stdout when not on a terminal (a traceback stays one journal entry);
- under systemd (``$JOURNAL_STREAM`` set) each line starts with a ``<N>`` syslog priority, which
  journald strips into ``PRIORITY`` so ``journalctl -p warning`` works;
- secret-looking keys are redacted, and URLs lose their userinfo and query string;
- tracebacks never carry frame locals (``show_locals=False``): a local ``api_key`` would
  otherwise be printed verbatim, and redaction never sees frame locals;
- stdlib loggers (watchdog, httpx, sqlite-utils) go through the same processors.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit, urlunsplit

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from stampd.store.pathnames import escape

LogFormat = Literal["auto", "json", "console"]

REDACTED = "[REDACTED]"
#: A key containing any of these is treated as a secret wherever it appears in an event.
SECRET_KEY_PARTS = (
    "api_key",
    "apikey",
    "authorization",
    "token",
    "secret",
    "password",
    "passphrase",
    "credential",
    "private_key",
)

_SYSLOG_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def is_secret_key(key: str) -> bool:
    """True when a field name looks like it holds a secret."""
    lowered = key.lower()
    # A CSC signing PIN: match the word, not every key that happens to contain "pin".
    if lowered == "pin" or lowered.endswith("_pin"):
        return True
    return any(part in lowered for part in SECRET_KEY_PARTS)


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


def _redact_value(key: str, value: Any) -> Any:
    if is_secret_key(key):
        return REDACTED
    if isinstance(value, MutableMapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, str) and key.endswith("url"):
        return scrub_url(value)
    return value


# A URL inside free text, up to whitespace or a quote (httpx writes `POST URL "HTTP/1.1 401"`).
_URL_IN_TEXT = re.compile(r"""https?://[^\s"'<>]+""")


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: replace secret-looking fields and scrub URLs.

    Our own events name URLs in ``*url`` fields; a library's message is free text, so URLs
    in it are found and scrubbed too (httpx logs each request's full URL, query included).
    """
    for key in list(event_dict):
        if key != "event":
            event_dict[key] = _redact_value(key, event_dict[key])
        elif isinstance(event_dict[key], str) and "://" in event_dict[key]:
            event_dict[key] = _URL_IN_TEXT.sub(lambda m: scrub_url(m.group()), event_dict[key])
    return event_dict


def _syslog_prefix(_logger: WrappedLogger, method: str, rendered: Any) -> str:
    # Runs after the JSON renderer, so `rendered` is the finished line, not an event dict.
    level = _SYSLOG_PRIORITY.get(method, 6)
    return f"<{level}>{rendered}"


def configure_logging(
    *,
    log_format: LogFormat = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> None:
    """Set up structlog and the stdlib root logger for one process."""
    out = stream if stream is not None else sys.stdout
    env = environ if environ is not None else os.environ
    if log_format == "auto":
        log_format = "console" if out.isatty() else "json"

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
        escape_names,
    ]
    renderer: Processor
    final: list[Processor]
    if log_format == "json":
        exceptions = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
        renderer = structlog.processors.JSONRenderer()
        final = [exceptions, renderer]
        if "JOURNAL_STREAM" in env:
            final.append(_syslog_prefix)
    else:
        # plain_traceback: rich's formatter (picked when rich is installed) shows locals.
        final = [
            structlog.dev.ConsoleRenderer(
                colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        ]

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # One INFO line per HTTP request duplicates our own tsa_attempt events (and httpcore's
    # DEBUG trace is noise); their warnings still come through.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)

    structlog.configure(
        # filter_by_level first: a debug event on a hot path costs one level check, not a render.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger; events use stable snake_case names (``version_recorded``)."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


# A name that is not UTF-8 (PEP 383 surrogate escapes) cannot be written to a terminal or
# parsed back from JSON by jq; log it in the escaped form the CLI prints (store/pathnames.py).
_UNDECODABLE = re.compile(r"[\udc80-\udcff]")


def escape_names(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: fields holding a file name that is not UTF-8 get its escaped form."""
    for key, value in event_dict.items():
        if isinstance(value, str) and _UNDECODABLE.search(value):
            event_dict[key] = escape(value)
        elif isinstance(value, list | tuple) and any(
            isinstance(item, str) and _UNDECODABLE.search(item) for item in value
        ):
            event_dict[key] = [escape(item) if isinstance(item, str) else item for item in value]
    return event_dict
