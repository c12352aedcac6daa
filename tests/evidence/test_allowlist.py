"""The upgrade allow-list: pending URIs come from the proof file, so every hostile one is refused.

Reference ``opentimestamps.md`` §2 ("Whitelist / SSRF"): same scheme, same path, host matched as
a glob; stampd adds that a URI must be a clean URL and that ``http`` is for loopback only.
"""

from __future__ import annotations

import pytest

from stampd.daemon.config.model import DEFAULT_ALLOW
from stampd.daemon.evidence.allowlist import (
    CleanUrl,
    UnsafeUrl,
    UrlAllowList,
    UrlPattern,
    parse_clean_url,
)

PUBLIC = UrlAllowList.from_patterns(DEFAULT_ALLOW)

# Every pending URI the public calendars write (reference §2, "Public calendars").
REAL_CALENDARS = [
    "https://alice.btc.calendar.opentimestamps.org",
    "https://bob.btc.calendar.opentimestamps.org",
    "https://finney.calendar.eternitywall.com",
    "https://btc.calendar.catallaxy.com",
]


@pytest.mark.parametrize("uri", REAL_CALENDARS)
def test_the_public_calendars_are_allowed_by_default(uri: str) -> None:
    assert PUBLIC.allows(uri)
    assert PUBLIC.allows(uri + "/")  # the trailing slash of the root path is the same path


def test_case_and_the_default_port_do_not_matter() -> None:
    assert PUBLIC.allows("HTTPS://Alice.BTC.Calendar.OpenTimestamps.org")
    assert PUBLIC.allows("https://alice.btc.calendar.opentimestamps.org:443")


# Each URI is one trick; none may pass the default allow-list.
HOSTILE = {
    "the pattern's host in the path": "https://evil.com/.calendar.opentimestamps.org",
    "the pattern's host as a prefix": "https://a.calendar.opentimestamps.org.evil.com",
    "a label ending like the suffix": "https://evilcalendar.opentimestamps.org",
    "the suffix itself (* is at least one label)": "https://calendar.opentimestamps.org",
    "user information": "https://user@alice.btc.calendar.opentimestamps.org",
    "user and password": "https://u:p@alice.btc.calendar.opentimestamps.org",
    "userinfo hiding the real host": "https://alice.btc.calendar.opentimestamps.org@evil.com",
    "downgrade to http": "http://alice.btc.calendar.opentimestamps.org",
    "a file URL": "file:///etc/passwd",
    "no scheme": "alice.btc.calendar.opentimestamps.org",
    "scheme-relative": "//alice.btc.calendar.opentimestamps.org",
    "a port the pattern has not": "https://alice.btc.calendar.opentimestamps.org:8443",
    "a path below the calendar": "https://alice.btc.calendar.opentimestamps.org/admin",
    "a dot-dot path": "https://alice.btc.calendar.opentimestamps.org/../x",
    "a percent-encoded path": "https://alice.btc.calendar.opentimestamps.org/%2e%2e",
    "a double slash": "https://alice.btc.calendar.opentimestamps.org//",
    "a query": "https://alice.btc.calendar.opentimestamps.org?x=1",
    "a fragment": "https://alice.btc.calendar.opentimestamps.org#x",
    "a backslash": "https://evil.com\\.calendar.opentimestamps.org",
    "a space": "https://alice.btc.calendar.opentimestamps.org /",
    "a newline": "https://alice.btc.calendar.opentimestamps.org\n",
    "a trailing dot": "https://alice.btc.calendar.opentimestamps.org.",
    "an empty label": "https://alice..calendar.opentimestamps.org",
    "loopback over https": "https://127.0.0.1",
    "loopback over http": "http://127.0.0.1:14788",
    "a numeric host": "https://2130706433",
    "a short IPv4 form": "https://127.1",
    "IPv6 loopback": "https://[::1]",
    "IPv4-mapped IPv6": "https://[::ffff:127.0.0.1]",
    "an IPv6 zone": "https://[fe80::1%25eth0]",
    "an unclosed bracket": "https://[::1",
    "a port that is not a number": "https://alice.btc.calendar.opentimestamps.org:x",
    "port zero": "https://alice.btc.calendar.opentimestamps.org:0",
    "an empty URI": "",
    "too long": "https://" + "a." * 500 + "calendar.opentimestamps.org",
    "an underscore in the host": "https://a_b.calendar.opentimestamps.org",
    "a wildcard in the URI itself": "https://*.calendar.opentimestamps.org",
}


@pytest.mark.parametrize("uri", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_pending_uris_are_refused(uri: str) -> None:
    assert not PUBLIC.allows(uri)
    assert PUBLIC.refusal(uri)


def test_a_refusal_says_whether_the_uri_is_unclean_or_just_not_allowed() -> None:
    assert PUBLIC.refusal("https://evil.com") == "not in the allow-list (anchor.allow)"
    assert PUBLIC.refusal("https://u@evil.com") == (
        "not a clean URL: must not contain user information (user@ or user:password@)"
    )
    assert (PUBLIC.refusal("http://alice.btc.calendar.opentimestamps.org") or "").startswith(
        "not a clean URL: must use https://"
    )


def test_loopback_is_allowed_only_when_listed_and_then_also_over_http() -> None:
    local = UrlAllowList.from_patterns(["http://127.0.0.1:14788", "http://[::1]:14788/cal/"])
    assert local.allows("http://127.0.0.1:14788")
    assert local.allows("http://127.0.0.1:14788/")
    assert not local.allows("http://127.0.0.1:14789")  # another port
    assert not local.allows("http://127.0.0.1")  # no port is port 80, not the pattern's
    assert not local.allows("https://127.0.0.1:14788")  # another scheme
    assert not local.allows("http://127.0.0.2:14788")  # another loopback address
    assert not local.allows("http://localhost:14788")  # names are not resolved to compare
    assert local.allows("http://[::1]:14788/cal")
    assert local.allows("http://[0:0:0:0:0:0:0:1]:14788/cal/")  # the same IPv6 address
    assert not local.allows("http://[::1]:14788/")  # another path
    assert not local.allows("http://[::1]:14788/cal/digest")  # nothing below the path


def test_a_glob_never_matches_an_address() -> None:
    allow = UrlAllowList.from_patterns(["https://*.example.org"])
    assert allow.allows("https://a.example.org")
    assert allow.allows("https://a.b.example.org")  # "*" is one or more labels
    assert not allow.allows("https://example.org")
    assert not allow.allows("https://1.2.3.4")


def test_international_names_compare_in_their_idna_form() -> None:
    allow = UrlAllowList.from_patterns(["https://*.Bücher.example"])
    assert allow.patterns[0].text == "https://*.xn--bcher-kva.example/"
    assert allow.allows("https://cal.xn--bcher-kva.example")
    assert allow.allows("https://cal.BÜCHER.example")
    # A look-alike letter is another name (U+0430, Cyrillic small a, in "calendar").
    assert not PUBLIC.allows("https://alice.btc.c\u0430lendar.opentimestamps.org")


def test_what_is_fetched_is_the_normalised_url_that_was_checked() -> None:
    # IDNA maps the ideographic full stop to ".": the URL asked is the ASCII one that matched.
    resolved = PUBLIC.resolve("https://Alice.btc.calendar.opentimestamps\u3002org:443")
    assert resolved.base == "https://alice.btc.calendar.opentimestamps.org/"
    with pytest.raises(UnsafeUrl, match=r"^not in the allow-list \(anchor.allow\)$"):
        PUBLIC.resolve("https://evil.example")


BAD_PATTERNS = {
    "http://*.calendar.opentimestamps.org": "must use https://",
    "http://calendar.example.org": "must use https://",
    "http://*.cal.localhost": "must use https://",  # only "localhost" itself is loopback
    "http://*.localhost": '"*." must be followed by a DNS name of at least two labels',
    "https://*.org": '"*." must be followed by a DNS name of at least two labels',
    "https://*.": "has no host",
    "https://*": 'may use "*" only as its whole first label',
    "https://*.1.2.3": "numeric host",
    "https://alice.*.opentimestamps.org": 'may use "*" only as its whole first label',
    "https://a*.calendar.opentimestamps.org": 'may use "*" only as its whole first label',
    "ftp://*.calendar.opentimestamps.org": "must be an http:// or https:// URL",
    "https://user@*.calendar.opentimestamps.org": "must not contain user information",
    "*.calendar.opentimestamps.org": "must be an http:// or https:// URL",
}


@pytest.mark.parametrize(("pattern", "why"), BAD_PATTERNS.items())
def test_bad_patterns_are_refused_with_a_reason(pattern: str, why: str) -> None:
    with pytest.raises(UnsafeUrl) as caught:
        UrlAllowList.from_patterns(["https://*.calendar.opentimestamps.org", pattern])
    assert str(caught.value).startswith(f"allow pattern {pattern!r} ")
    assert why in str(caught.value)


def test_patterns_are_normalised() -> None:
    assert UrlPattern.parse("HTTPS://*.Calendar.OpenTimestamps.org:443").text == (
        "https://*.calendar.opentimestamps.org/"
    )
    assert UrlPattern.parse("http://LOCALHOST:8080/cal").text == "http://localhost:8080/cal"


def test_a_clean_url_keeps_its_path_and_gives_a_base_ending_in_a_slash() -> None:
    assert parse_clean_url("https://H.example/cal") == CleanUrl("https", "h.example", None, "/cal")
    assert parse_clean_url("https://h.example/cal").base == "https://h.example/cal/"
    assert parse_clean_url("https://h.example/cal/").base == "https://h.example/cal/"
    assert parse_clean_url("https://h.example").base == "https://h.example/"
    assert parse_clean_url("http://[::1]:8332").text == "http://[::1]:8332/"
    assert parse_clean_url("http://127.0.0.1:80/").text == "http://127.0.0.1/"
    assert parse_clean_url("http://127.0.0.9").is_loopback
    assert not parse_clean_url("http://[::ffff:127.0.0.1]").is_loopback
