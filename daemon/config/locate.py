"""Finding the configuration file, reading its TOML, and where the daemon keeps its state.

``stampd status``, ``ls`` and ``show`` need two settings of the whole file: ``daemon.state_dir``
(the index) and ``daemon.control_socket`` (the running daemon). They read them here, through
the same :class:`~stampd.daemon.config.table.Table` getters and defaults as the full reader
(:func:`stampd.daemon.config.sections.read_daemon_settings` calls :func:`daemon_locations`),
so both resolve a file to the same two paths; what the rest of the file holds is checked by
``stampd config check`` and by the daemon when it starts or reloads (DESIGN §8). Validating
it all costs a query command about a third of its start-up (the model's frozen dataclasses,
the section parsers; DESIGN §11: CLI start ≤ 100 ms over ``python -c pass``), for settings it
never reads.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from stampd.daemon.config.table import Problems, Table

if TYPE_CHECKING:
    from stampd.daemon.config.problems import ConfigError

#: Where the configuration lives unless ``--config`` or ``$STAMPD_CONFIG`` says otherwise.
DEFAULT_CONFIG_PATH = Path("/etc/stampd/config.toml")
#: The environment variable naming the configuration file.
CONFIG_ENV_VAR = "STAMPD_CONFIG"
#: ``daemon.state_dir`` and ``daemon.control_socket`` when the file does not set them.
DEFAULT_STATE_DIR = "/var/lib/stampd"
DEFAULT_CONTROL_SOCKET = "/run/stampd/control.sock"

# A configuration is a few kilobytes; the cap turns `--config /dev/zero` into an error, not a hang.
_MAX_CONFIG_BYTES = 1 << 20


class Locations(NamedTuple):
    """Where the daemon of one configuration keeps its state and listens for the CLI.

    A NamedTuple rather than a frozen dataclass: it is built when a query command starts,
    and a dataclass compiles its generated methods at import (~1.5 ms of that start-up).
    """

    state_dir: Path
    control_socket: Path


def config_path_from(option: str | None, environ: Mapping[str, str]) -> Path:
    """The configuration file to use: ``--config``, else ``$STAMPD_CONFIG``, else the default."""
    if option is not None:
        return Path(option)
    from_environment = environ.get(CONFIG_ENV_VAR)
    if from_environment:  # an empty variable counts as unset, as shells treat it
        return Path(from_environment)
    return DEFAULT_CONFIG_PATH


def read_config_file(path: Path) -> Mapping[str, Any]:
    """The TOML data of the file at ``path``, not validated yet.

    Raises :class:`ConfigError` (one problem without a key) when the file is missing,
    unreadable, too large, not UTF-8 or not TOML: then no setting can be checked.
    """

    def unusable(problem: str, hint: str | None = None) -> ConfigError:
        # Imported on this error path only (see Problems.add).
        from stampd.daemon.config.problems import ConfigProblem, config_error  # noqa: PLC0415

        return config_error(path, [ConfigProblem(None, None, problem, hint)])

    try:
        with path.open("rb") as file:
            raw = file.read(_MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise unusable(
            "no such configuration file",
            f"create it from config.example.toml, or name another with --config FILE"
            f" or ${CONFIG_ENV_VAR}",
        ) from None
    except OSError as error:
        raise unusable(f"cannot read the configuration: {error.strerror}") from None
    if len(raw) > _MAX_CONFIG_BYTES:
        raise unusable("larger than 1 MiB, which is not a stampd configuration")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise unusable(
            f"not UTF-8 text (bad byte at offset {error.start})", "TOML files are UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as error:
        # tomllib's message ends with "(at line L, column C)".
        raise unusable(f"invalid TOML: {error}") from None


def daemon_locations(table: Table) -> Locations:
    """``state_dir`` and ``control_socket`` of the ``[daemon]`` table (problems reported)."""
    return Locations(
        state_dir=table.path("state_dir", DEFAULT_STATE_DIR),
        control_socket=table.path("control_socket", DEFAULT_CONTROL_SOCKET),
    )


def load_locations(path: Path) -> Locations:
    """The two paths of the configuration file at ``path``, each checked as the full reader
    checks it; the other settings are not read.

    Raises :class:`ConfigError` naming the file when it cannot be read, is not TOML, or when
    ``[daemon]``, ``state_dir`` or ``control_socket`` is invalid.
    """
    problems = Problems()
    root = Table(
        read_config_file(path),
        "",
        "the top level",
        problems,
        base_dir=path.absolute().parent,
        environ={},
        keys_by_table={},
    )
    locations = daemon_locations(root.table("daemon", "[daemon]"))
    if problems:
        from stampd.daemon.config.problems import config_error  # noqa: PLC0415

        raise config_error(path, problems)
    return locations
