"""The ``[anchor]`` and ``[anchor.bitcoin]`` tables: OpenTimestamps calendars, quorum, upgrade
cadence, the upgrade allow-list, and the Bitcoin header source (issue 12, reference
``opentimestamps.md`` §2 to §5).

Every problem names its key (``anchor.min_replies``) and what to write instead. URLs and
allow-list patterns follow the rules of :mod:`stampd.daemon.evidence.allowlist`: clean URLs,
``https`` except to loopback hosts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stampd.daemon.config.durations import format_duration
from stampd.daemon.config.model import (
    DEFAULT_ALLOW,
    DEFAULT_CALENDARS,
    AnchorConfig,
    BitcoinSourceConfig,
)
from stampd.daemon.config.sections import _unreadable_file_problem
from stampd.daemon.config.table import MISSING, Table, show
from stampd.daemon.evidence.allowlist import (
    UnsafeUrl,
    UrlPattern,
    check_transport,
    parse_clean_url,
)

_ANCHOR_KEYS = (
    "calendars",
    "min_replies",
    "timeout",
    "retry",
    "retry_max",
    "upgrade_after",
    "upgrade_max",
    "allow",
)
_BITCOIN_KEYS = ("url", "cookie_file", "username", "secret_file")
#: The keys of the tables read here, by title (merged into the file's schema by the reader).
ANCHOR_KEYS_BY_TABLE = {"[anchor]": (*_ANCHOR_KEYS, "bitcoin"), "[anchor.bitcoin]": _BITCOIN_KEYS}
#: The calendars' cache lifetime: a pending reply is cached for 60 s (``max-age=60``,
#: reference §2 and §4), so asking sooner only reads the same answer again.
MIN_UPGRADE_AFTER = 60.0
_LOOPBACK = "loopback hosts: 127.0.0.1, ::1, localhost"


def read_anchor(table: Table) -> AnchorConfig:
    """The ``[anchor]`` section (the defaults when it is absent)."""
    table.check_keys(ANCHOR_KEYS_BY_TABLE["[anchor]"])
    calendars = _calendars(table)
    min_replies = _min_replies(table, calendars)
    upgrade_after = table.duration("upgrade_after", "1h", allow_zero=False)
    upgrade_max = table.duration("upgrade_max", "24h", allow_zero=False)
    if upgrade_after < MIN_UPGRADE_AFTER:
        table.add(
            "upgrade_after",
            f"{format_duration(upgrade_after)} is shorter than 60s, the calendars' cache"
            ' lifetime (a sooner try reads the same cached answer; the default is "1h")',
        )
    elif upgrade_max < upgrade_after:
        table.add(
            "upgrade_max",
            f"{format_duration(upgrade_max)} is shorter than upgrade_after"
            f" ({format_duration(upgrade_after)})",
        )
    # The same keys and defaults as [timestamp]'s, for a submission that missed its quorum,
    # except the cap: calendars are free and aggregate per second, so a stamp that waits
    # longer than an hour behind an outage only delays the proof (reference §3.4).
    retry = table.duration("retry", "30s", allow_zero=False)
    retry_max = table.duration("retry_max", "1h", allow_zero=False)
    if retry_max < retry:
        table.add(
            "retry_max",
            f"{format_duration(retry_max)} is shorter than retry ({format_duration(retry)})",
        )
    return AnchorConfig(
        calendars=calendars or DEFAULT_CALENDARS,
        min_replies=min_replies,
        timeout=table.duration("timeout", "5s", allow_zero=False),
        retry=retry,
        retry_max=retry_max,
        upgrade_after=upgrade_after,
        upgrade_max=upgrade_max,
        allow=_allow(table),
        bitcoin=_bitcoin(table),
    )


def _calendars(table: Table) -> tuple[str, ...]:
    """The calendars as normalised bases; () when the list is invalid (and reported)."""
    listed = table.strings("calendars", DEFAULT_CALENDARS)
    raw = table.get("calendars")
    if raw is not MISSING and listed is DEFAULT_CALENDARS:
        return ()  # not a list of strings (reported): the defaults only stand in
    if not listed:
        table.add(
            "calendars",
            f"[] lists no calendar (stamping needs at least one; unset, the defaults are"
            f" {show(list(DEFAULT_CALENDARS[:2]))}...)",
        )
        return ()
    bases: list[str] = []
    first_seen: dict[str, int] = {}
    for index, text in enumerate(listed):
        item = f"{table.key('calendars')}[{index}]"
        try:
            url = parse_clean_url(text)
            check_transport(url)
        except UnsafeUrl as error:
            table.problems.add(
                item,
                f"{show(text)} {error}",
                "stampd sends digests there and merges what comes back; a calendar must be"
                f" an https:// URL ({_LOOPBACK}, may use http://)",
                value=text,
            )
            continue
        if url.base in first_seen:
            table.problems.add(
                item,
                f"{show(text)} is the same calendar as {table.key('calendars')}"
                f"[{first_seen[url.base]}] (list a calendar once)",
                value=text,
            )
            continue
        first_seen[url.base] = index
        bases.append(url.base)
    return tuple(bases) if len(bases) == len(listed) else ()


def _min_replies(table: Table, calendars: tuple[str, ...]) -> int:
    value = table.get("min_replies")
    written = value is not MISSING
    if not written:
        value = 2
    elif isinstance(value, bool) or not isinstance(value, int):
        table.add("min_replies", f"{show(value)} must be a whole number (like 2)")
        return 1
    # Reference §3.4: `ots stamp -m` above the number of calendars, or <= 0, is an error: a
    # quorum that cannot be reached would fail every stamp.
    count = len(calendars)
    if value < 1:
        table.add("min_replies", f"{value} must be at least 1 (the replies a stamp needs)")
    elif calendars and value > count:
        shown = str(value) if written else f"{value} (the default)"
        plural = "calendar" if count == 1 else "calendars"
        table.add(
            "min_replies",
            f"{shown} is more than the {count} {plural} configured (no stamp could succeed)",
            f"set min_replies = {count}, or add calendars",
            value=value if written else None,
        )
    return value


def _allow(table: Table) -> tuple[str, ...]:
    """The allow-list patterns, normalised; the defaults when unset or invalid (reported)."""
    listed = table.strings("allow", DEFAULT_ALLOW)
    patterns: list[str] = []
    for index, text in enumerate(listed):
        try:
            patterns.append(UrlPattern.parse(text).text)
        except UnsafeUrl as error:
            table.problems.add(
                f"{table.key('allow')}[{index}]",
                f"{show(text)} {error}",
                'a pattern is scheme://host[:port][/path], the host exact or "*." + a name'
                ' ("https://*.calendar.opentimestamps.org"); pending URIs come from proof'
                " files, so only hosts trusted to answer may be listed",
                value=text,
            )
    return tuple(dict.fromkeys(patterns)) if len(patterns) == len(listed) else DEFAULT_ALLOW


def _bitcoin(anchor: Table) -> BitcoinSourceConfig | None:
    """``[anchor.bitcoin]``, or None when it is absent or not a table (reported)."""
    present = isinstance(anchor.get("bitcoin"), Mapping)
    table = anchor.table("bitcoin", "[anchor.bitcoin]")
    if not present:
        return None
    table.check_keys(_BITCOIN_KEYS)
    url = table.required_string("url") or ""
    if url:
        shown = _redacted(url)
        try:
            # Any host: bitcoind has no TLS, and a node on another machine is reached over a
            # network the operator trusts (a VPN, a tunnel).
            url = parse_clean_url(url).text
        except UnsafeUrl as error:
            table.add(
                "url",
                f"{show(shown)} {error}",
                'expected bitcoind\'s JSON-RPC URL, like "http://127.0.0.1:8332/";'
                " credentials go in cookie_file, or username + secret_file",
                value=shown,
            )
    cookie_file = table.optional_path("cookie_file")
    username = table.optional_string("username")
    secret_file = table.secret_path("secret_file")
    _check_credentials(table, cookie_file is not None, username, table.get("secret_file"))
    if secret_file is not None:
        problem = _unreadable_file_problem(secret_file)
        if problem:
            table.add("secret_file", f"{show(str(secret_file))} {problem}")
    return BitcoinSourceConfig(
        url=url, cookie_file=cookie_file, username=username, secret_file=secret_file
    )


def _check_credentials(
    table: Table, has_cookie: bool, username: str | None, secret: object
) -> None:
    """Exactly one way to log in: bitcoind's cookie, or a user (rpcauth) and its password."""
    # Whether secret_file is written at all: a bad one is reported by its own check.
    has_secret = secret is not MISSING
    if has_cookie and (username is not None or has_secret):
        table.add(
            "cookie_file",
            "is set together with username/secret_file (use one: the cookie, or a user)",
        )
    elif not has_cookie and username is None and not has_secret:
        table.problems.add(
            table.key_path,
            "needs credentials: cookie_file (bitcoind's .cookie), or username + secret_file",
        )
    elif username is None and has_secret:
        table.add("secret_file", 'is set without username (add username = "...")')
    elif username is not None and not has_secret:
        table.add("username", "needs secret_file, the file holding the RPC password")


def _redacted(url: str) -> str:
    # DESIGN §4 rule 7: a password written into a URL is never echoed.
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def anchor_to_dict(anchor: AnchorConfig) -> dict[str, Any]:
    """``[anchor]`` as JSON-ready data (``stampd config check``): paths, never secrets."""
    bitcoin = anchor.bitcoin
    return {
        "calendars": list(anchor.calendars),
        "min_replies": anchor.min_replies,
        "timeout": format_duration(anchor.timeout),
        "retry": format_duration(anchor.retry),
        "retry_max": format_duration(anchor.retry_max),
        "upgrade_after": format_duration(anchor.upgrade_after),
        "upgrade_max": format_duration(anchor.upgrade_max),
        "allow": list(anchor.allow),
        "bitcoin": None
        if bitcoin is None
        else {
            "url": bitcoin.url,
            "cookie_file": None if bitcoin.cookie_file is None else str(bitcoin.cookie_file),
            "username": bitcoin.username,
            "secret_file": None if bitcoin.secret_file is None else str(bitcoin.secret_file),
        },
    }
