"""The configuration file: defaults, path resolution, and one clear line per problem."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from stampd.daemon.config.check import check_config
from stampd.daemon.config.locate import DEFAULT_CONFIG_PATH, config_path_from
from stampd.daemon.config.model import (
    Config,
    DaemonSettings,
    TimestampConfig,
    TsaConfig,
    WatchConfig,
)
from stampd.daemon.config.problems import ConfigError, ConfigProblem
from stampd.daemon.config.reader import config_to_dict, load_config, parse_config
from tests.conftest import unprivileged

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"

TSA = """
[[timestamp.tsa]]
name = "local"
url = "http://127.0.0.1:8318/tsa"
"""
WATCH = """
[[watch]]
path = "inbox"
"""


def _write(directory: Path, text: str) -> Path:
    path = directory / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(directory: Path, text: str) -> ConfigError:
    path = _write(directory, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


# Each case is one mistake; the file must report exactly that problem, as one line that starts
# with the key path, then the value, then what is expected. "{dir}" is the config's directory.
BAD_CONFIGS = {
    "bad duration": (
        '[[watch]]\npath = "inbox"\nquiet = "2x"\n' + TSA,
        'watch[0].quiet: "2x" is not a duration (try "2s")',
    ),
    "bare number duration": (
        '[[watch]]\npath = "inbox"\nquiet = "2"\n' + TSA,
        'watch[0].quiet: "2" has no unit (try "2s")',
    ),
    "duration as a TOML number": (
        '[[watch]]\npath = "inbox"\nquiet = 2\n' + TSA,
        'watch[0].quiet: 2 must be a string with a unit (try "2s")',
    ),
    "zero quiet period": (
        '[[watch]]\npath = "inbox"\nquiet = "0s"\n' + TSA,
        'watch[0].quiet: "0s" must be more than 0s (like "2s")',
    ),
    "negative min_interval": (
        WATCH + TSA + 'min_interval = "-5s"\n',
        'timestamp.tsa[0].min_interval: "-5s" is negative (try "5s")',
    ),
    "unknown top-level section": (
        WATCH + TSA + "[notary]\ncalendars = []\n",
        "notary: unknown section (valid sections: daemon, watch, timestamp, anchor)",
    ),
    "unknown key with a suggestion": (
        '[daemon]\nstat_dir = "/var/lib/stampd"\n' + WATCH + TSA,
        'daemon.stat_dir: unknown key (did you mean "state_dir"?)'
        " (valid keys in [daemon]: state_dir, control_socket, log_format, log_level, metrics,"
        " rescan, fallback_rescan, stall_after, hash_workers)",
    ),
    "key placed in the wrong table": (
        WATCH + TSA + 'quiet = "5s"\n',
        "timestamp.tsa[0].quiet: unknown key (it belongs in [[watch]])"
        " (valid keys in [[timestamp.tsa]]: name, url, trust, min_interval, policy, auth,"
        " username, secret_file)",
    ),
    "evidence as a string instead of a list": (
        '[[watch]]\npath = "inbox"\nevidence = "tsr"\n' + TSA,
        'watch[0].evidence: "tsr" must be a list of strings (try ["tsr"])',
    ),
    "unknown evidence kind": (
        '[[watch]]\npath = "inbox"\nevidence = ["tsr", "ers"]\n' + TSA,
        'watch[0].evidence[1]: "ers" is not an evidence kind (available: "tsr", "ots";'
        ' planned: "p7s", "attest")',
    ),
    "duplicate evidence kind": (
        '[[watch]]\npath = "inbox"\nevidence = ["tsr", "tsr"]\n' + TSA,
        'watch[0].evidence[1]: "tsr" is already listed as watch[0].evidence[0] (list a kind once)',
    ),
    "seals are not available yet": (
        '[[watch]]\npath = "inbox"\nevidence = ["p7s"]\n',
        'watch[0].evidence[0]: "p7s" is not available yet (planned: CAdES seals);'
        ' available: "tsr", "ots"',
    ),
    "attestation receipts are not available yet": (
        '[[watch]]\npath = "inbox"\nevidence = ["attest"]\n',
        'watch[0].evidence[0]: "attest" is not available yet'
        ' (planned: attestation service receipts); available: "tsr", "ots"',
    ),
    "empty include": (
        '[[watch]]\npath = "inbox"\ninclude = []\n' + TSA,
        'watch[0].include: [] matches no file (use ["**"] for every file)',
    ),
    "nested watches": (
        WATCH + '[[watch]]\npath = "inbox/invoices"\n' + TSA,
        'watch[1].path: "{dir}/inbox/invoices" is inside watch[0].path "{dir}/inbox"'
        " (watches must not be nested; use exclude to leave a subtree out)",
    ),
    "the same directory watched twice": (
        WATCH + '[[watch]]\npath = "{dir}/inbox/."\n' + TSA,
        'watch[1].path: "{dir}/inbox" is also watch[0].path (watch a directory once)',
    ),
    "state inside a watch": (
        '[daemon]\nstate_dir = "inbox/.stampd"\n' + WATCH + TSA,
        'daemon.state_dir: "{dir}/inbox/.stampd" is inside watch[0].path "{dir}/inbox"'
        " (stampd would stamp its own files; keep the state elsewhere)",
    ),
    "no watch": (
        '[daemon]\nlog_level = "debug"\n' + TSA,
        'watch: none configured (add a [[watch]] with path = "/srv/records")',
    ),
    "single [watch] table": (
        '[watch]\npath = "inbox"\n' + TSA,
        "watch: must be an array of tables (write [[watch]], not [watch])",
    ),
    "watch without path": (
        "[[watch]]\nevidence = []\n",
        "watch[0].path: is missing (required in every [[watch]])",
    ),
    "tsr without any TSA": (
        WATCH,
        'watch[0].evidence: "tsr" needs a time-stamping authority (add a [[timestamp.tsa]])',
    ),
    "bad URL scheme": (
        WATCH + '[[timestamp.tsa]]\nname = "x"\nurl = "ftp://x"\n',
        'timestamp.tsa[0].url: "ftp://x" must be an http:// or https:// URL',
    ),
    "URL without host": (
        WATCH + '[[timestamp.tsa]]\nname = "x"\nurl = "https:///tsr"\n',
        'timestamp.tsa[0].url: "https:///tsr" has no host (expected http://HOST/...)',
    ),
    "URL with a password, which is not echoed": (
        WATCH + '[[timestamp.tsa]]\nname = "x"\nurl = "https://me:s3cret@tsa.example/"\n',
        'timestamp.tsa[0].url: "https://me:***@tsa.example/" must not contain a password'
        " (secrets belong in files, not the config)",
    ),
    "duplicate TSA name": (
        WATCH + TSA + TSA,
        'timestamp.tsa[1].name: "local" is already the name of timestamp.tsa[0]'
        " (names must be unique)",
    ),
    "invalid TSA name": (
        WATCH + '[[timestamp.tsa]]\nname = "Free TSA"\nurl = "https://freetsa.org/tsr"\n',
        'timestamp.tsa[0].name: "Free TSA" must be lowercase letters, digits, "-" and "_",'
        ' starting with a letter or digit (try "free-tsa")',
    ),
    "TSA without url": (
        WATCH + '[[timestamp.tsa]]\nname = "x"\n',
        "timestamp.tsa[0].url: is missing (required in every [[timestamp.tsa]])",
    ),
    "missing trust file": (
        WATCH + TSA + 'trust = "roots/tsa.pem"\n',
        'timestamp.tsa[0].trust: "{dir}/roots/tsa.pem" does not exist'
        " (expected a readable PEM file of root certificates)",
    ),
    "bad metrics port": (
        '[daemon]\nmetrics = "127.0.0.1:99999"\n' + WATCH + TSA,
        'daemon.metrics: "127.0.0.1:99999" must be HOST:PORT with a port from 1 to 65535'
        ' (like "127.0.0.1:9464")',
    ),
    "bad selection": (
        WATCH + '[timestamp]\nselection = "roundrobin"\n' + TSA,
        'timestamp.selection: "roundrobin" must be one of "round-robin", "priority"'
        ' (did you mean "round-robin"?)',
    ),
    "bad digest": (
        WATCH + '[timestamp]\ndigest = "md5"\n' + TSA,
        'timestamp.digest: "md5" must be one of "sha256", "sha384", "sha512"',
    ),
    "bad mode": (
        WATCH + '[timestamp]\nmode = "per_file"\n' + TSA,
        'timestamp.mode: "per_file" must be one of "per-file" (did you mean "per-file"?)',
    ),
    "batch mode is not available yet": (
        WATCH + '[timestamp]\nmode = "batch"\n' + TSA,
        'timestamp.mode: "batch" is not available yet (planned: many files under one TSA token,'
        ' each with an RFC 4998 evidence record); available: "per-file"',
    ),
    "bad log level": (
        '[daemon]\nlog_level = "verbose"\n' + WATCH + TSA,
        'daemon.log_level: "verbose" must be one of "debug", "info", "warning", "error"',
    ),
    "policy that is not an OID": (
        WATCH + TSA + 'policy = "advanced"\n',
        'timestamp.tsa[0].policy: "advanced" is not an OID (like "1.3.6.1.4.1.4146.2.3")',
    ),
    "basic auth without a username": (
        WATCH + TSA + 'auth = "basic"\nsecret_file = "/etc/hostname"\n',
        'timestamp.tsa[0].auth: "basic" needs a username (add username = "...")',
    ),
    "bearer auth without a secret file": (
        WATCH + TSA + 'auth = "bearer"\n',
        'timestamp.tsa[0].auth: "bearer" needs secret_file, the file holding the secret',
    ),
    "missing secret file": (
        WATCH + TSA + 'auth = "bearer"\nsecret_file = "/nonexistent/token"\n',
        'timestamp.tsa[0].secret_file: "/nonexistent/token" does not exist',
    ),
    "retry_max shorter than retry": (
        WATCH + '[timestamp]\nretry = "1m"\nretry_max = "10s"\n' + TSA,
        "timestamp.retry_max: 10s is shorter than retry (1m)",
    ),
    "cooldown of zero": (
        WATCH + '[timestamp]\ncooldown = "0s"\n' + TSA,
        'timestamp.cooldown: "0s" must be more than 0s (like "30s")',
    ),
    "section of the wrong type": (
        "daemon = 5\n" + WATCH + TSA,
        "daemon: 5 must be a table ([daemon])",
    ),
}


@pytest.mark.parametrize(("text", "problem"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_configuration(tmp_path: Path, text: str, problem: str) -> None:
    expected = problem.replace("{dir}", str(tmp_path))
    error = _error(tmp_path, text.replace("{dir}", str(tmp_path)))
    assert error.lines == (expected,)
    assert str(error) == f"{tmp_path / 'config.toml'}: {expected}"
    assert "\n" not in str(error)
    assert error.error_class == "config"


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    error = _error(
        tmp_path,
        '[daemon]\nlog_format = "text"\n'
        '[[watch]]\npath = "inbox"\nquiet = "2x"\nevidence = ["p7s", "zzz"]\n'
        '[timestamp]\ntimeout = "10"\n',
    )
    assert error.lines == (
        'daemon.log_format: "text" must be one of "auto", "json", "console"',
        'watch[0].evidence[0]: "p7s" is not available yet (planned: CAdES seals);'
        ' available: "tsr", "ots"',
        'watch[0].evidence[1]: "zzz" is not an evidence kind (available: "tsr", "ots";'
        ' planned: "p7s", "attest")',
        'watch[0].quiet: "2x" is not a duration (try "2s")',
        'timestamp.timeout: "10" has no unit (try "10s")',
    )
    assert [(p.key, p.value) for p in error.problems] == [
        ("daemon.log_format", "text"),
        ("watch[0].evidence[0]", "p7s"),
        ("watch[0].evidence[1]", "zzz"),
        ("watch[0].quiet", "2x"),
        ("timestamp.timeout", "10"),
    ]
    config = tmp_path / "config.toml"
    assert error.message == f"{config}: 5 errors" + "".join(f"\n  - {p}" for p in error.lines)
    assert error.hint is None


def test_toml_syntax_error_names_the_file_line_and_column(tmp_path: Path) -> None:
    error = _error(tmp_path, '[daemon]\nstate_dir = "/var/lib/stampd"\nlog_level = debug\n')
    assert str(error).startswith(f"{tmp_path / 'config.toml'}: invalid TOML: ")
    assert str(error).endswith("(at line 3, column 13)")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert caught.value.message == f"{tmp_path / 'absent.toml'}: no such configuration file"
    assert caught.value.hint is not None
    assert "--config" in caught.value.hint
    assert "STAMPD_CONFIG" in caught.value.hint


def test_a_directory_is_not_a_configuration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": cannot read the configuration: Is a directory$"):
        load_config(tmp_path)


def test_a_binary_file_is_not_a_configuration(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[daemon]\nstate_dir = "\xff"\n')
    with pytest.raises(
        ConfigError, match=r"config\.toml: not UTF-8 text \(bad byte at offset 22\)"
    ):
        load_config(path)


def test_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, WATCH + TSA))
    assert config == Config(
        source=tmp_path / "config.toml",
        daemon=DaemonSettings(
            state_dir=Path("/var/lib/stampd"),
            control_socket=Path("/run/stampd/control.sock"),
            log_format="auto",
            log_level="info",
            metrics=None,
            rescan=86400.0,
            fallback_rescan=600.0,
        ),
        watches=(
            WatchConfig(
                path=tmp_path / "inbox",
                evidence=("tsr",),
                include=("**",),
                exclude=(),
                quiet=2.0,
                sidecars="adjacent",
                max_wait=3600.0,
            ),
        ),
        timestamp=TimestampConfig(
            selection="round-robin",
            timeout=10.0,
            digest="sha256",
            mode="per-file",
            tsa=(
                TsaConfig(
                    name="local", url="http://127.0.0.1:8318/tsa", trust=None, min_interval=0
                ),
            ),
        ),
    )


def test_every_setting(tmp_path: Path) -> None:
    (tmp_path / "roots.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    config = load_config(
        _write(
            tmp_path,
            '[daemon]\nstate_dir = "/srv/state"\ncontrol_socket = "/run/s.sock"\n'
            'log_format = "json"\nlog_level = "debug"\nmetrics = "[::1]:9464"\n'
            '[[watch]]\npath = "/srv/records"\nevidence = ["tsr"]\n'
            'include = ["**/*.pdf"]\nexclude = ["**/.git/**"]\nquiet = "1m30s"\n'
            'sidecars = "mirror"\n'
            '[[watch]]\npath = "/srv/logs"\nevidence = []\nquiet = "500ms"\n'
            '[timestamp]\nselection = "priority"\ntimeout = "30s"\ndigest = "sha512"\n'
            'mode = "per-file"\nretry = "10s"\nretry_max = "1h"\ncooldown = "1m"\n'
            + TSA
            + 'trust = "roots.pem"\nmin_interval = "15s"\n',
        )
    )
    assert config.daemon.metrics == ("::1", 9464)
    assert config.daemon.log_format == "json"
    assert [watch.path for watch in config.watches] == [Path("/srv/records"), Path("/srv/logs")]
    assert config.watches[0].evidence == ("tsr",)
    assert config.watches[1].evidence == ()  # inventory only: versions and digests
    assert config.watches[0].quiet == 90
    assert config.watches[0].sidecars == "mirror"
    assert config.watches[1].quiet == 0.5
    assert (config.timestamp.selection, config.timestamp.digest) == ("priority", "sha512")
    assert config.timestamp.mode == "per-file"
    assert (config.timestamp.retry, config.timestamp.retry_max) == (10, 3600)
    assert config.timestamp.cooldown == 60
    assert config.timestamp.tsa[0].trust == tmp_path / "roots.pem"
    assert config.timestamp.tsa[0].min_interval == 15


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "roots.pem").write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _write(
        etc,
        '[daemon]\nstate_dir = "state"\ncontrol_socket = "../run/control.sock"\n'
        '[[watch]]\npath = "~/records"\n' + TSA + 'trust = "./roots.pem"\n',
    )
    # A relative --config is relative to the working directory; what it names is not.
    config = load_config(Path("../etc/config.toml"))
    assert config.source == elsewhere / "../etc/config.toml"
    assert config.daemon.state_dir == etc / "state"
    assert config.daemon.control_socket == tmp_path / "run" / "control.sock"
    assert config.watches[0].path == etc / "~" / "records"  # "~" is not expanded
    assert config.timestamp.tsa[0].trust == etc / "roots.pem"


def test_a_trust_file_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "roots").mkdir()
    error = _error(tmp_path, WATCH + TSA + 'trust = "roots"\n')
    assert error.lines == (
        f'timestamp.tsa[0].trust: "{tmp_path / "roots"}" is not a regular file'
        " (expected a readable PEM file of root certificates)",
    )


def test_an_unreadable_trust_file(shared_tmp: Path) -> None:
    roots = shared_tmp / "roots.pem"
    roots.write_text("")
    roots.chmod(0)
    config = _write(shared_tmp, WATCH + TSA + 'trust = "roots.pem"\n')
    config.chmod(0o644)
    with unprivileged(), pytest.raises(ConfigError) as caught:
        load_config(config)
    error = caught.value
    assert error.lines == (
        f'timestamp.tsa[0].trust: "{roots}" cannot be read (Permission denied)'
        " (expected a readable PEM file of root certificates)",
    )


def test_parse_config_takes_data_and_the_source_path() -> None:
    config = parse_config(
        {"watch": [{"path": "data", "evidence": []}]}, source=Path("/etc/stampd/x.toml")
    )
    assert config.source == Path("/etc/stampd/x.toml")
    assert config.watches[0].path == Path("/etc/stampd/data")
    with pytest.raises(ConfigError) as caught:
        parse_config({}, source=Path("/etc/stampd/x.toml"))
    assert caught.value.lines == (
        'watch: none configured (add a [[watch]] with path = "/srv/records")',
    )


def test_effective_config_round_trips(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            '[daemon]\nmetrics = "127.0.0.1:9464"\n'
            '[[watch]]\npath = "inbox"\nquiet = "1.5s"\n' + TSA + 'min_interval = "1h30m"\n',
        )
    )
    effective = config_to_dict(config)
    assert json.loads(json.dumps(effective)) == effective
    assert effective["daemon"]["metrics"] == "127.0.0.1:9464"
    assert effective["watch"][0]["path"] == str(tmp_path / "inbox")
    assert effective["watch"][0]["quiet"] == "1s500ms"
    assert effective["timestamp"]["tsa"][0] == {
        "name": "local",
        "url": "http://127.0.0.1:8318/tsa",
        "trust": None,
        "min_interval": "1h30m",
        "policy": None,
        "auth": "none",
        "username": None,
        "secret_file": None,
    }
    assert parse_config(effective, source=config.source) == config


def test_config_path_precedence() -> None:
    env = {"STAMPD_CONFIG": "/from/env.toml"}
    assert config_path_from("/from/option.toml", env) == Path("/from/option.toml")
    assert config_path_from(None, env) == Path("/from/env.toml")
    assert config_path_from(None, {"STAMPD_CONFIG": ""}) == DEFAULT_CONFIG_PATH
    assert config_path_from(None, {}) == Path("/etc/stampd/config.toml")


def test_a_config_error_without_a_list_is_one_problem_without_a_key() -> None:
    error = ConfigError("x.toml: broken", hint="fix it")
    assert error.problems == (ConfigProblem(None, None, "x.toml: broken", "fix it"),)
    problem = {"key": None, "value": None, "problem": "x.toml: broken", "hint": "fix it"}
    assert error.to_dict() == {
        "error_class": "config",
        "message": "x.toml: broken",
        "hint": "fix it",
        "problems": [problem],
    }


def test_the_shipped_example_is_valid() -> None:
    try:
        # Fully: its trust files must hold roots, as `stampd run` would read them.
        config = check_config(EXAMPLE).config
    except ConfigError as error:
        # The example pins roots from the system CA bundle (Debian's ca-certificates).
        if all(".trust: " in line and " does not exist " in line for line in error.lines):
            pytest.skip(f"the system CA bundle is not installed: {error}")
        raise
    assert config.source == EXAMPLE
    assert config.watches[0].path == EXAMPLE.parent / "demo" / "inbox"
    assert config.daemon.state_dir == EXAMPLE.parent / "demo" / "state"
    assert [tsa.name for tsa in config.timestamp.tsa] == ["digicert", "globalsign", "sectigo"]
    assert config.timestamp.tsa[2].min_interval == 15


def _credential_config(tmp_path: Path, secret_file: str) -> str:
    return (
        f'[[watch]]\npath = "{tmp_path}/w"\nevidence = ["tsr"]\n'
        '[[timestamp.tsa]]\nname = "t"\nurl = "https://tsa.example/"\nauth = "bearer"\n'
        f'secret_file = "{secret_file}"\n'
    )


def test_a_secret_file_can_name_a_systemd_credential(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "tsa_t").write_text("token\n")
    text = _credential_config(tmp_path, "$CREDENTIALS_DIRECTORY/tsa_t")
    config = parse_config(
        tomllib.loads(text),
        source=tmp_path / "config.toml",
        environ={"CREDENTIALS_DIRECTORY": str(credentials)},
    )
    assert config.timestamp.tsa[0].secret_file == credentials / "tsa_t"


@pytest.mark.parametrize(
    ("secret_file", "environ", "problem"),
    [
        (
            "$CREDENTIALS_DIRECTORY/tsa_t",
            {},
            'timestamp.tsa[0].secret_file: "$CREDENTIALS_DIRECTORY/tsa_t": $CREDENTIALS_DIRECTORY'
            " is not set (systemd sets it for the stampd service, from LoadCredential= in its"
            " unit; elsewhere, set it or name the file directly)",
        ),
        (
            "$CREDENTIALS_DIRECTORY/../etc/shadow",
            {"CREDENTIALS_DIRECTORY": "/run/credentials/stampd.service"},
            'timestamp.tsa[0].secret_file: "$CREDENTIALS_DIRECTORY/../etc/shadow" must name one'
            " credential: $CREDENTIALS_DIRECTORY/NAME",
        ),
        (
            "$CREDENTIALS_DIRECTORY/absent",
            {"CREDENTIALS_DIRECTORY": "/nonexistent/credentials"},
            'timestamp.tsa[0].secret_file: "/nonexistent/credentials/absent" does not exist',
        ),
    ],
)
def test_bad_credential_references(
    tmp_path: Path, secret_file: str, environ: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            tomllib.loads(_credential_config(tmp_path, secret_file)),
            source=tmp_path / "config.toml",
            environ=environ,
        )
    assert raised.value.lines == (problem,)


def test_an_inventory_only_watch_needs_no_timestamp_section(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, '[[watch]]\npath = "inbox"\nevidence = []\n'))
    assert config.watches[0].evidence == ()
    assert config.timestamp.tsa == ()
    # Omitted, evidence stays the one kind that works today.
    assert load_config(_write(tmp_path, WATCH + TSA)).watches[0].evidence == ("tsr",)


def test_each_problem_carries_its_key_and_the_value_as_written(tmp_path: Path) -> None:
    error = _error(
        tmp_path,
        "[daemon]\nstate_dir = 5\nrescan = 1979-05-27T07:32:00Z\n"
        '[[watch]]\npath = "inbox"\nevidence = ["tsr", 3]\n'
        '[[timestamp.tsa]]\nname = "x"\nurl = "ftp://me:s3cret@tsa.example/"\n'
        'password = "s3cret-too"\n',
    )
    found = {problem.key: problem for problem in error.problems}
    assert found["daemon.state_dir"].value == 5
    assert found["daemon.rescan"].value == "1979-05-27T07:32:00+00:00"
    assert found["watch[0].evidence[1]"].value == 3
    # Neither a password in a URL nor a value under an unknown key (a misplaced secret?)
    # is echoed.
    assert found["timestamp.tsa[0].url"].value == "ftp://me:***@tsa.example/"
    assert found["timestamp.tsa[0].password"].value is None
    assert "s3cret" not in json.dumps([problem.to_dict() for problem in error.problems])
    assert found["timestamp.tsa[0].url"].to_dict() == {
        "key": "timestamp.tsa[0].url",
        "value": "ftp://me:***@tsa.example/",
        "problem": '"ftp://me:***@tsa.example/" must not contain a password'
        " (secrets belong in files, not the config)",
        "hint": None,
    }


def test_a_file_that_cannot_be_read_is_one_problem_without_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    (problem,) = caught.value.problems
    assert (problem.key, problem.value, problem.problem) == (
        None,
        None,
        "no such configuration file",
    )
    assert problem.hint == caught.value.hint
