"""Logging: JSON lines, journald priorities, redaction, no frame locals in tracebacks."""

from __future__ import annotations

import io
import json
import logging

import pytest

from stampd.daemon.logs import configure_logging, get_logger, is_secret_key, scrub_url


class _NotATerminal(io.StringIO):
    def isatty(self) -> bool:
        return False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


def test_json_lines_when_not_on_a_terminal() -> None:
    out = _NotATerminal()
    configure_logging(stream=out, environ={})
    get_logger("stampd.test").info("version_recorded", path="/srv/a", size=5)
    (line,) = _lines(out)
    event = json.loads(line)
    assert event["event"] == "version_recorded"
    assert event["level"] == "info"
    assert event["logger"] == "stampd.test"
    assert event["path"] == "/srv/a"
    assert event["timestamp"].endswith("Z")


def test_console_rendering_on_a_terminal() -> None:
    out = _Terminal()
    configure_logging(stream=out, environ={})
    get_logger("stampd.test").info("daemon_ready", pid=1)
    (line,) = _lines(out)
    assert "daemon_ready" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_journald_priority_prefix_under_systemd() -> None:
    out = _NotATerminal()
    configure_logging(stream=out, environ={"JOURNAL_STREAM": "8:1234"})
    log = get_logger("stampd.test")
    log.warning("tsa_attempt_failed")
    log.error("index_write_failed")
    warning, error = _lines(out)
    assert warning.startswith("<4>{")
    assert error.startswith("<3>{")
    assert json.loads(warning[3:])["event"] == "tsa_attempt_failed"


def test_secret_fields_are_redacted_at_any_depth() -> None:
    out = _NotATerminal()
    configure_logging(stream=out, environ={})
    get_logger("stampd.test").info(
        "provider_configured",
        api_key="sk-live-123",
        headers={"Authorization": "Bearer abc", "Accept": "x"},
        csc_pin="4711",
        url="https://user:hunter2@tsa.example/tsr?token=zzz",
        pinned_root="kept",
    )
    text = out.getvalue()
    for secret in ("sk-live-123", "Bearer abc", "4711", "hunter2", "zzz"):
        assert secret not in text
    event = json.loads(text)
    assert event["headers"]["Accept"] == "x"
    assert event["url"] == "https://tsa.example/tsr?[REDACTED]"
    assert event["pinned_root"] == "kept"


def test_tracebacks_carry_no_local_variables() -> None:
    out = _NotATerminal()
    configure_logging(stream=out, environ={})

    def fail() -> None:
        api_key_in_a_local = "sk-live-SECRET-LOCAL"  # noqa: F841 - the point of the test
        raise RuntimeError("boom")

    try:
        fail()
    except RuntimeError:
        get_logger("stampd.test").exception("job_crashed")
    text = out.getvalue()
    assert "boom" in text
    assert "sk-live-SECRET-LOCAL" not in text
    assert "job_crashed" in text


def test_stdlib_loggers_share_the_format() -> None:
    out = _NotATerminal()
    configure_logging(stream=out, environ={})
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed")
    event = json.loads(_lines(out)[0])
    assert event["event"] == "Inotify queue overflowed"
    assert event["level"] == "warning"
    assert event["logger"] == "watchdog.observers.inotify_c"


def test_level_filters_debug() -> None:
    out = _NotATerminal()
    configure_logging(stream=out, level="warning", environ={})
    get_logger("stampd.test").info("chatty")
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("api_key", True),
        ("Authorization", True),
        ("bearer_token", True),
        ("pin", True),
        ("signer_pin", True),
        ("pinned_root", False),
        ("path", False),
        ("spinning", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_scrub_url_keeps_what_an_operator_needs() -> None:
    assert scrub_url("http://timestamp.digicert.com") == "http://timestamp.digicert.com"
    assert scrub_url("https://u:p@h:8443/a?b=c#d") == "https://h:8443/a?[REDACTED]"
