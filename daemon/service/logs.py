"""Logging: structlog, JSON lines for journald or console rendering on a terminal.

Follows reference/watching-and-service.md §5.1:
- one JSON object per line on stdout when not on a terminal (a traceback stays one journal entry);
- under systemd (``$JOURNAL_STREAM`` set) each line starts with a ``<N>`` syslog priority, which
  journald strips into ``PRIORITY`` so ``journalctl -p warning`` works;
- keys that name a secret are redacted (see SECRET_WORDS), and URLs lose their userinfo and
  query string;
- tracebacks never carry frame locals (``show_locals=False``): a local ``api_key`` would
  otherwise be printed verbatim, and redaction never sees frame locals;
- stdlib loggers (watchdog, httpx, sqlite-utils) go through the same processors.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from stampd.daemon.service.scrub import REDACTED, scrub_url
from stampd.store.files.pathnames import escape

LogFormat = Literal["auto", "json", "console"]

# Redaction goes by what a key NAMES, read as words (snake_case, camelCase, kebab-case and
# HTTP header names alike): `access_token`, `clientSecret`, `X-Api-Key`, `Set-Cookie` name a
# secret; `archived_token`, `token_count`, `tokens_archived`, `pin_count`, `spinner` do not,
# or hold no secret. The noun that a key names is its last word:
# - `secret_file`, `password_file`, `token_url`, `pin_path` name where a secret is, not the
#   secret: the path is logged (the operator needs it to fix a mode; the secret stays in the
#   file, DESIGN rule 7) and a URL is scrubbed of userinfo and query like every `*url`;
# - `token_count`, `token_type`, `secret_name`, `tokens_archived` name something else.
# A few trailing words only say how the secret is spelled (`token_value`, `password_b64`).
#: The last word of a key that names a secret.
SECRET_WORDS = frozenset(
    {
        "apikey",
        "authorization",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "passphrase",
        "passwd",
        "password",
        "passwords",
        "pin",
        "secret",
        "secrets",
        "token",
        "tokens",
    }
)
#: Keys ending in "key" name a secret only after one of these (`api_key`, `privateKey`):
#: a bare `key` in our events is a configuration key such as ``timestamp.tsa[0].secret_file``.
SECRET_KEY_QUALIFIERS = frozenset({"api", "private", "secret", "session", "signing"})
#: Trailing words that only say how a secret is written down.
_SPELLINGS = frozenset({"value", "text", "string", "str", "raw", "bytes", "b64", "base64", "hex"})
# Words of a key: "APIKey" -> API, Key; "archivedToken" -> archived, Token; "b64" one word.
_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+[0-9]*|[A-Z]+[0-9]*|[0-9]+")

_SYSLOG_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def key_words(key: str) -> list[str]:
    """A field name as lowercase words: ``"X-Api-Key"`` -> ``["x", "api", "key"]``."""
    return [word.lower() for word in _WORD.findall(key)]


def is_secret_key(key: str) -> bool:
    """True when a field name names a secret (not a path, URL, count or flag about one)."""
    words = key_words(key)
    while words and (words[-1] in _SPELLINGS or words[-1].isdigit()):
        words.pop()
    if not words:
        return False
    last = words[-1].rstrip("0123456789")  # `token2`
    if last in SECRET_WORDS:
        return True
    return last == "key" and len(words) >= 2 and words[-2] in SECRET_KEY_QUALIFIERS


def _holds_no_secret(value: Any) -> bool:
    # Secrets are text read from files; a flag, a number or nothing is a fact about one
    # (`token_archived=True`), which the operator needs to see.
    return value is None or isinstance(value, bool | int | float)


def _redact_value(key: str, value: Any) -> Any:
    if is_secret_key(key) and not _holds_no_secret(value):
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # Headers as pairs, [("Authorization", "Bearer …")], or a list of mappings.
        return [
            (item[0], _redact_value(item[0], item[1]))
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
            else _redact_value(key, item)
            for item in value
        ]
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
# parsed back from JSON by jq; log it in the escaped form the CLI prints (store/files/pathnames.py).
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
