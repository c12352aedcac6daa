"""Logging: JSON lines, journald priorities, redaction, no frame locals in tracebacks."""

from __future__ import annotations

import io
import json
import logging

import pytest

from stampd.daemon.service.logs import configure_logging, get_logger, is_secret_key, scrub_url


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
        ("apiKey", True),
        ("APIKey", True),
        ("x-api-key", True),
        ("apikey", True),
        ("Authorization", True),
        ("Proxy-Authorization", True),
        ("bearer_token", True),
        ("access_token", True),
        ("accessToken", True),
        ("X-Auth-Token", True),
        ("refresh_token2", True),
        ("token", True),
        ("secret", True),
        ("client_secret", True),
        ("clientSecret", True),
        ("password", True),
        ("db-password", True),
        ("passphrase", True),
        ("credential", True),
        ("credentials", True),
        ("private_key", True),
        ("privateKey", True),
        ("pin", True),
        ("signer_pin", True),
        ("Cookie", True),
        ("Set-Cookie", True),
        ("token_value", True),
        ("password_b64", True),
        # Look-alikes: a word inside another, or a fact about a secret rather than the secret.
        ("pinned_root", False),
        ("path", False),
        ("spinning", False),
        ("spinner", False),
        ("pin_count", False),
        ("token_count", False),
        ("tokens_archived", False),
        ("token_type", False),
        ("secret_name", False),
        ("tokenizer", False),
        ("passwordless", False),
        ("key", False),  # our events' configuration key names, e.g. timestamp.tsa[0].trust
        ("public_key", False),
        # Where a secret is, not the secret: logged (a path) or scrubbed (a URL).
        ("secret_file", False),
        ("password_file", False),
        ("pin_path", False),
        ("token_url", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_redaction_goes_by_meaning_and_keeps_facts_about_secrets() -> None:
    out = _NotATerminal()
    configure_logging(stream=out, environ={})
    get_logger("stampd.test").warning(
        "tsr_job_backing_off",
        token_archived=True,
        archived_token=False,  # named like a secret, but a flag is never one
        token_count=3,
        tokens_archived=2,
        pin_count=1,
        token=None,
        secret_file="/etc/stampd/tsa.secret",
        token_url="https://auth.example/oauth/token?client_secret=s3cr3t",
        spinner="|",
        request={
            "headers": {"Authorization": "Basic dXNlcjpodW50ZXIy", "X-Api-Key": "ak-1"},
            "body": {"client_secret": "cs-2", "grant_type": "client_credentials"},
            "cookies": {"session": "ck-3"},
        },
        pairs=[("Cookie", "ck-4"), ("Accept", "application/timestamp-reply")],
        attempts=[{"provider": "a", "access_token": "at-5"}],
        accessToken="at-6",
        csc_pin="4711",
    )
    text = out.getvalue()
    for secret in ("dXNlcjpodW50ZXIy", "ak-1", "cs-2", "ck-3", "ck-4", "at-5", "at-6", "4711"):
        assert secret not in text
    assert "s3cr3t" not in text
    event = json.loads(text)
    assert event["token_archived"] is True and event["archived_token"] is False
    assert (event["token_count"], event["tokens_archived"], event["pin_count"]) == (3, 2, 1)
    assert event["token"] is None
    assert event["secret_file"] == "/etc/stampd/tsa.secret"
    assert event["token_url"] == "https://auth.example/oauth/token?[REDACTED]"
    assert event["spinner"] == "|"
    assert event["request"]["body"]["grant_type"] == "client_credentials"
    assert event["request"]["cookies"] == "[REDACTED]"
    assert event["pairs"] == [["Cookie", "[REDACTED]"], ["Accept", "application/timestamp-reply"]]
    assert event["attempts"] == [{"provider": "a", "access_token": "[REDACTED]"}]


def test_scrub_url_keeps_what_an_operator_needs() -> None:
    assert scrub_url("http://timestamp.digicert.com") == "http://timestamp.digicert.com"
    assert scrub_url("https://u:p@h:8443/a?b=c#d") == "https://h:8443/a?[REDACTED]"
