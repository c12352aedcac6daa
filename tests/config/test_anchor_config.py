"""``[anchor]`` and ``[anchor.bitcoin]`` (issue 12, item 5): defaults, normalisation, and one
line naming the key for every mistake."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from stampd.daemon.cli.app import cli
from stampd.daemon.config.model import (
    DEFAULT_ALLOW,
    DEFAULT_CALENDARS,
    AnchorConfig,
    BitcoinSourceConfig,
    Config,
)
from stampd.daemon.config.problems import ConfigError
from stampd.daemon.config.reader import config_to_dict, load_config, parse_config
from stampd.daemon.evidence.allowlist import UrlAllowList

# An inventory-only watch: no TSA is needed, so each case is only about [anchor].
WATCH = '[[watch]]\npath = "inbox"\nevidence = []\n'
SECRET = "rpc-password-never-shown"


def _load(directory: Path, text: str) -> Config:
    path = directory / "config.toml"
    path.write_text(WATCH + text, encoding="utf-8")
    return load_config(path)


def _lines(directory: Path, text: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        _load(directory, text)
    return caught.value.lines


def test_the_defaults_are_the_public_calendars_and_allow_patterns(tmp_path: Path) -> None:
    anchor = _load(tmp_path, "").anchor
    assert anchor == AnchorConfig()
    assert anchor.calendars == (
        "https://a.pool.opentimestamps.org/",
        "https://b.pool.opentimestamps.org/",
        "https://a.pool.eternitywall.com/",
        "https://ots.btc.catallaxy.com/",
    )
    assert (anchor.min_replies, anchor.timeout) == (2, 5.0)
    assert (anchor.upgrade_after, anchor.upgrade_max) == (3600.0, 86400.0)
    assert (anchor.retry, anchor.retry_max) == (30.0, 3600.0)
    assert anchor.allow == DEFAULT_ALLOW
    assert anchor.bitcoin is None
    # What the public calendars write into proofs is allowed by the default patterns.
    allowed = UrlAllowList.from_patterns(anchor.upgrade_patterns)
    assert allowed.allows("https://alice.btc.calendar.opentimestamps.org")
    assert allowed.allows("https://finney.calendar.eternitywall.com")


def test_the_issue_example_reads_as_written(tmp_path: Path) -> None:
    (tmp_path / "cookie").write_text("__cookie__:abc\n")
    anchor = _load(
        tmp_path,
        """
[anchor]
calendars = ["https://a.pool.opentimestamps.org", "https://b.pool.opentimestamps.org",
             "https://a.pool.eternitywall.com", "https://ots.btc.catallaxy.com"]
min_replies = 2
timeout = "5s"
upgrade_after = "1h"
upgrade_max = "24h"
allow = ["https://*.calendar.opentimestamps.org", "https://*.calendar.eternitywall.com",
         "https://*.calendar.catallaxy.com"]
[anchor.bitcoin]
url = "http://127.0.0.1:8332/"
cookie_file = "cookie"
""",
    ).anchor
    assert anchor == AnchorConfig(
        bitcoin=BitcoinSourceConfig(url="http://127.0.0.1:8332/", cookie_file=tmp_path / "cookie")
    )


def test_calendar_urls_are_normalised_bases_that_keep_their_path(tmp_path: Path) -> None:
    anchor = _load(
        tmp_path,
        '[anchor]\ncalendars = ["HTTPS://Cal.Example.org:443", "https://cal.example.org/ots",'
        ' "http://127.0.0.1:14788", "http://[::1]:14789/cal/", "http://localhost:1"]\n',
    ).anchor
    # The path is where the calendar lives: its endpoints are appended (".../ots/digest").
    assert anchor.calendars == (
        "https://cal.example.org/",
        "https://cal.example.org/ots/",
        "http://127.0.0.1:14788/",
        "http://[::1]:14789/cal/",
        "http://localhost:1/",
    )
    # A configured calendar may upgrade the proofs it wrote without an allow entry.
    allowed = UrlAllowList.from_patterns(anchor.upgrade_patterns)
    assert allowed.allows("http://127.0.0.1:14788")
    assert not allowed.allows("http://127.0.0.1:14790")


def test_one_calendar_with_one_reply(tmp_path: Path) -> None:
    anchor = _load(
        tmp_path, '[anchor]\ncalendars = ["http://127.0.0.1:14788"]\nmin_replies = 1\n'
    ).anchor
    assert (anchor.calendars, anchor.min_replies) == (("http://127.0.0.1:14788/",), 1)


CALENDAR_HINT = (
    "stampd sends digests there and merges what comes back; a calendar must be an https:// URL"
    " (loopback hosts: 127.0.0.1, ::1, localhost, may use http://)"
)
ALLOW_HINT = (
    'a pattern is scheme://host[:port][/path], the host exact or "*." + a name'
    ' ("https://*.calendar.opentimestamps.org"); pending URIs come from proof files, so only'
    " hosts trusted to answer may be listed"
)
# Each case is one mistake in [anchor]; the file reports exactly that line.
BAD = {
    "http to a public calendar": (
        '[anchor]\ncalendars = ["http://a.pool.opentimestamps.org"]\nmin_replies = 1\n',
        'anchor.calendars[0]: "http://a.pool.opentimestamps.org" must use https:// (http:// only'
        " for loopback hosts: 127.0.0.1, ::1, localhost; plain HTTP can be read and altered on"
        f" the way) ({CALENDAR_HINT})",
    ),
    "not a URL": (
        '[anchor]\ncalendars = ["a.pool.opentimestamps.org"]\nmin_replies = 1\n',
        'anchor.calendars[0]: "a.pool.opentimestamps.org" must be an http:// or https:// URL'
        f" ({CALENDAR_HINT})",
    ),
    "a calendar with a query": (
        '[anchor]\ncalendars = ["https://c.example.org/?k=1"]\nmin_replies = 1\n',
        f'anchor.calendars[0]: "https://c.example.org/?k=1" must not contain a query'
        f" ({CALENDAR_HINT})",
    ),
    "a calendar with credentials": (
        '[anchor]\ncalendars = ["https://u@c.example.org"]\nmin_replies = 1\n',
        'anchor.calendars[0]: "https://u@c.example.org" must not contain user information'
        f" (user@ or user:password@) ({CALENDAR_HINT})",
    ),
    "the same calendar twice": (
        '[anchor]\ncalendars = ["https://c.example.org/ots", "https://C.example.org/ots/"]\n'
        "min_replies = 1\n",
        'anchor.calendars[1]: "https://C.example.org/ots/" is the same calendar as'
        " anchor.calendars[0] (list a calendar once)",
    ),
    "no calendar": (
        "[anchor]\ncalendars = []\n",
        "anchor.calendars: [] lists no calendar (stamping needs at least one; unset, the"
        ' defaults are ["https://a.pool.opentimestamps.org/", "https://b.pool.opentimestamps.org/"]...)',
    ),
    "calendars as a string": (
        '[anchor]\ncalendars = "https://c.example.org"\n',
        'anchor.calendars: "https://c.example.org" must be a list of strings'
        ' (try ["https://c.example.org"])',
    ),
    "a calendar that is not a string (the quorum is not checked against a stand-in)": (
        '[anchor]\ncalendars = ["https://c.example.org", 5]\nmin_replies = 3\n',
        "anchor.calendars[1]: 5 must be a string",
    ),
    "more replies than calendars": (
        '[anchor]\ncalendars = ["https://c.example.org", "https://d.example.org"]\n'
        "min_replies = 3\n",
        "anchor.min_replies: 3 is more than the 2 calendars configured (no stamp could succeed)"
        " (set min_replies = 2, or add calendars)",
    ),
    "the default quorum with one calendar": (
        '[anchor]\ncalendars = ["https://c.example.org"]\n',
        "anchor.min_replies: 2 (the default) is more than the 1 calendar configured"
        " (no stamp could succeed) (set min_replies = 1, or add calendars)",
    ),
    "zero replies": (
        "[anchor]\nmin_replies = 0\n",
        "anchor.min_replies: 0 must be at least 1 (the replies a stamp needs)",
    ),
    "replies as a string": (
        '[anchor]\nmin_replies = "2"\n',
        'anchor.min_replies: "2" must be a whole number (like 2)',
    ),
    "replies as a boolean": (
        "[anchor]\nmin_replies = true\n",
        "anchor.min_replies: true must be a whole number (like 2)",
    ),
    "zero timeout": (
        '[anchor]\ntimeout = "0s"\n',
        'anchor.timeout: "0s" must be more than 0s (like "5s")',
    ),
    "upgrades faster than the calendars' cache": (
        '[anchor]\nupgrade_after = "30s"\n',
        "anchor.upgrade_after: 30s is shorter than 60s, the calendars' cache lifetime"
        ' (a sooner try reads the same cached answer; the default is "1h")',
    ),
    "retry_max below retry": (
        '[anchor]\nretry = "2m"\nretry_max = "1m"\n',
        "anchor.retry_max: 1m is shorter than retry (2m)",
    ),
    "a zero retry": (
        '[anchor]\nretry = "0s"\n',
        'anchor.retry: "0s" must be more than 0s (like "30s")',
    ),
    "upgrade_max below upgrade_after": (
        '[anchor]\nupgrade_after = "2h"\nupgrade_max = "1h"\n',
        "anchor.upgrade_max: 1h is shorter than upgrade_after (2h)",
    ),
    "an http allow pattern": (
        '[anchor]\nallow = ["http://*.calendar.opentimestamps.org"]\n',
        'anchor.allow[0]: "http://*.calendar.opentimestamps.org" must use https:// (http:// only'
        " for loopback hosts: 127.0.0.1, ::1, localhost; plain HTTP can be read and altered on"
        f" the way) ({ALLOW_HINT})",
    ),
    "a glob over a whole top-level domain": (
        '[anchor]\nallow = ["https://*.org"]\n',
        'anchor.allow[0]: "https://*.org" "*." must be followed by a DNS name of at least two'
        f" labels ({ALLOW_HINT})",
    ),
    "a star inside a label": (
        '[anchor]\nallow = ["https://cal*.example.org"]\n',
        'anchor.allow[0]: "https://cal*.example.org" may use "*" only as its whole first label'
        f' ("https://*.example.org") ({ALLOW_HINT})',
    ),
    "an unknown key": (
        "[anchor]\nmin_reply = 1\n",
        'anchor.min_reply: unknown key (did you mean "min_replies"?) (valid keys in [anchor]:'
        " calendars, min_replies, timeout, retry, retry_max, upgrade_after, upgrade_max, allow,"
        " bitcoin)",
    ),
    "a TSA key in [anchor]": (
        '[anchor]\nselection = "priority"\n',
        "anchor.selection: unknown key (it belongs in [timestamp]) (valid keys in [anchor]:"
        " calendars, min_replies, timeout, retry, retry_max, upgrade_after, upgrade_max, allow,"
        " bitcoin)",
    ),
    "[anchor] as an array of tables": (
        "[[anchor]]\nmin_replies = 1\n",
        "anchor: must be a single table (write [anchor], not [[anchor]])",
    ),
    "bitcoin that is not a table": (
        '[anchor]\nbitcoin = "http://127.0.0.1:8332/"\n',
        'anchor.bitcoin: "http://127.0.0.1:8332/" must be a table ([anchor.bitcoin])',
    ),
    "bitcoin without a url": (
        '[anchor.bitcoin]\ncookie_file = "/var/lib/bitcoind/.cookie"\n',
        "anchor.bitcoin.url: is missing (required in every [anchor.bitcoin])",
    ),
    "bitcoin without credentials": (
        '[anchor.bitcoin]\nurl = "http://127.0.0.1:8332/"\n',
        "anchor.bitcoin: needs credentials: cookie_file (bitcoind's .cookie),"
        " or username + secret_file",
    ),
    "bitcoin with both kinds of credentials": (
        '[anchor.bitcoin]\nurl = "http://127.0.0.1:8332/"\ncookie_file = "/c"\n'
        'username = "stampd"\nsecret_file = "secret"\n',
        "anchor.bitcoin.cookie_file: is set together with username/secret_file"
        " (use one: the cookie, or a user)",
    ),
    "bitcoin user without its password": (
        '[anchor.bitcoin]\nurl = "http://127.0.0.1:8332/"\nusername = "stampd"\n',
        "anchor.bitcoin.username: needs secret_file, the file holding the RPC password",
    ),
    "bitcoin password without its user": (
        '[anchor.bitcoin]\nurl = "http://127.0.0.1:8332/"\nsecret_file = "secret"\n',
        'anchor.bitcoin.secret_file: is set without username (add username = "...")',
    ),
    "a missing bitcoin secret file": (
        '[anchor.bitcoin]\nurl = "http://127.0.0.1:8332/"\nusername = "stampd"\n'
        'secret_file = "absent"\n',
        'anchor.bitcoin.secret_file: "{dir}/absent" does not exist',
    ),
    "a bitcoin url that is not http": (
        '[anchor.bitcoin]\nurl = "tcp://127.0.0.1:8332"\ncookie_file = "/c"\n',
        'anchor.bitcoin.url: "tcp://127.0.0.1:8332" must be an http:// or https:// URL'
        ' (expected bitcoind\'s JSON-RPC URL, like "http://127.0.0.1:8332/";'
        " credentials go in cookie_file, or username + secret_file)",
    ),
    "an unknown bitcoin key": (
        '[anchor.bitcoin]\nurl = "http://127.0.0.1:8332/"\ncookie_file = "/c"\npassword = "x"\n',
        "anchor.bitcoin.password: unknown key (valid keys in [anchor.bitcoin]: url, cookie_file,"
        " username, secret_file)",
    ),
}


@pytest.mark.parametrize(("text", "line"), BAD.values(), ids=BAD.keys())
def test_each_mistake_is_one_line_naming_the_key(tmp_path: Path, text: str, line: str) -> None:
    (tmp_path / "secret").write_text(SECRET)
    assert _lines(tmp_path, text) == (line.replace("{dir}", str(tmp_path)),)


def test_the_default_quorum_is_not_shown_as_a_written_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, '[anchor]\ncalendars = ["https://c.example.org"]\n')
    assert [(p.key, p.value) for p in caught.value.problems] == [("anchor.min_replies", None)]


def test_a_password_in_the_bitcoin_url_is_never_shown(tmp_path: Path) -> None:
    lines = _lines(
        tmp_path,
        f'[anchor.bitcoin]\nurl = "http://stampd:{SECRET}@127.0.0.1:8332/"\ncookie_file = "/c"\n',
    )
    assert lines[0].startswith(
        'anchor.bitcoin.url: "http://stampd:***@127.0.0.1:8332/" must not contain user'
    )
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, f'[anchor.bitcoin]\nurl = "http://u:{SECRET}@h:1/"\ncookie_file = "/c"\n')
    assert SECRET not in json.dumps(caught.value.to_dict())


def test_bitcoin_with_a_user_and_a_systemd_credential(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "bitcoin_rpc").write_text(SECRET)
    text = (
        WATCH + '[anchor.bitcoin]\nurl = "http://[::1]:8332"\nusername = "stampd"\n'
        'secret_file = "$CREDENTIALS_DIRECTORY/bitcoin_rpc"\n'
    )
    config = parse_config(
        tomllib.loads(text),
        source=tmp_path / "config.toml",
        environ={"CREDENTIALS_DIRECTORY": str(credentials)},
    )
    assert config.anchor.bitcoin == BitcoinSourceConfig(
        url="http://[::1]:8332/", username="stampd", secret_file=credentials / "bitcoin_rpc"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), source=tmp_path / "config.toml", environ={})
    assert caught.value.lines[0].startswith(
        'anchor.bitcoin.secret_file: "$CREDENTIALS_DIRECTORY/bitcoin_rpc":'
        " $CREDENTIALS_DIRECTORY is not set"
    )


def test_the_cookie_file_need_not_exist_while_bitcoind_is_down(tmp_path: Path) -> None:
    # bitcoind writes .cookie at its start and removes it at its stop: stampd reads it per use.
    anchor = _load(
        tmp_path, '[anchor.bitcoin]\nurl = "http://10.0.0.2:8332/"\ncookie_file = "btc/.cookie"\n'
    ).anchor
    assert anchor.bitcoin == BitcoinSourceConfig(
        url="http://10.0.0.2:8332/", cookie_file=tmp_path / "btc" / ".cookie"
    )


def test_a_watch_may_ask_for_ots_now_that_it_is_available(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir(exist_ok=True)
    text = '[anchor]\nmin_replies = 1\n[[watch]]\npath = "other"\nevidence = ["ots"]\n'
    config = _load(tmp_path, text)
    assert config.watches[1].evidence == ("ots",) and config.anchor.min_replies == 1


SECTIONS = "valid sections: daemon, watch, timestamp, anchor"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[notary]\nx = 1\n", f"notary: unknown section ({SECTIONS})"),
        ("[anchors]\nx = 1\n", f'anchors: unknown section (did you mean "anchor"?) ({SECTIONS})'),
        (
            "[seal]\nsigner = 'local'\n",
            f"seal: not available yet (planned: CAdES seals) ({SECTIONS})",
        ),
        (
            "[restamp]\nmargin = '90d'\n",
            f"restamp: not available yet (planned: RFC 4998 evidence records) ({SECTIONS})",
        ),
        (
            "[[attest.service]]\nurl = 'https://a.example'\n",
            f"attest: not available yet (planned: attestation service receipts) ({SECTIONS})",
        ),
    ],
)
def test_sections_come_from_the_registry(tmp_path: Path, text: str, line: str) -> None:
    assert _lines(tmp_path, text) == (line,)


def test_the_effective_configuration_shows_the_section_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET)
    config = _load(
        tmp_path,
        '[anchor]\ncalendars = ["http://127.0.0.1:14788"]\nmin_replies = 1\ntimeout = "1.5s"\n'
        'retry = "10s"\nretry_max = "5m"\nupgrade_after = "90s"\nupgrade_max = "2h"\nallow = ["https://*.Cal.Example.org:8443/ots/"]\n'
        '[anchor.bitcoin]\nurl = "http://127.0.0.1:8332"\nusername = "stampd"\n'
        'secret_file = "secret"\n',
    )
    effective = config_to_dict(config)
    assert effective["anchor"] == {
        "calendars": ["http://127.0.0.1:14788/"],
        "min_replies": 1,
        "timeout": "1s500ms",
        "retry": "10s",
        "retry_max": "5m",
        "upgrade_after": "1m30s",
        "upgrade_max": "2h",
        "allow": ["https://*.cal.example.org:8443/ots/"],
        "bitcoin": {
            "url": "http://127.0.0.1:8332/",
            "cookie_file": None,
            "username": "stampd",
            "secret_file": str(tmp_path / "secret"),
        },
    }
    assert parse_config(json.loads(json.dumps(effective)), source=config.source) == config
    assert config_to_dict(_load(tmp_path, ""))["anchor"] == {
        "calendars": list(DEFAULT_CALENDARS),
        "min_replies": 2,
        "timeout": "5s",
        "retry": "30s",
        "retry_max": "1h",
        "upgrade_after": "1h",
        "upgrade_max": "1d",
        "allow": list(DEFAULT_ALLOW),
        "bitcoin": None,
    }


def test_config_check_json_shows_anchor_and_never_the_secret(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET)
    path = tmp_path / "config.toml"
    path.write_text(
        WATCH + '[anchor.bitcoin]\nurl = "http://127.0.0.1:8332/"\nusername = "stampd"\n'
        'secret_file = "secret"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli, ["config", "check", "--json", str(path)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["effective"]["anchor"]["bitcoin"]["secret_file"] == str(tmp_path / "secret")
    assert SECRET not in result.stdout + result.stderr
