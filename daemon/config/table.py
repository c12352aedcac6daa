"""The typed reader of one TOML table: :class:`Table`, and where its problems go.

Every section parser (:mod:`stampd.daemon.config.sections`) reads its settings through a
:class:`Table`: getters that check a value's type and form (strings, choices, durations, paths,
secret files), report each problem with its full key path (``watch[1].quiet``), and return a
stand-in so that reading goes on and every problem of a file is found at once (DESIGN §4 rule 2).
:func:`show` writes a value back as TOML, for the messages.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from datetime import date, time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    # Imported where a problem is found: `stampd status` reads two paths through a Table
    # and, when they are fine, never builds a problem (a frozen dataclass, ~1.5 ms to create).
    from stampd.daemon.config.problems import ConfigProblem

#: A secret file named ``$CREDENTIALS_DIRECTORY/NAME`` is a systemd credential (LoadCredential=).
CREDENTIALS_PREFIX = "$CREDENTIALS_DIRECTORY/"


class Problems(list["ConfigProblem"]):
    """Every problem found in one file, in the order the file was read."""

    def add(self, key: str, text: str, hint: str | None = None, *, value: object = None) -> None:
        """Report ``text`` (and ``hint``) for key path ``key``; ``value`` as written."""
        from stampd.daemon.config.problems import ConfigProblem  # noqa: PLC0415

        self.append(ConfigProblem(key, json_value(value), text, hint))


def json_value(value: object) -> Any:
    """A value read from TOML as JSON-ready data, for :attr:`ConfigProblem.value`."""
    # A whole table is not "the value" of a problem; TOML has no null.
    if value is MISSING or value is None or isinstance(value, Mapping):
        return None
    if isinstance(value, list):
        items = [json_value(item) for item in value]
        return None if any(isinstance(item, Mapping) for item in value) else items
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # TOML has inf and nan; JSON has neither
    return value


class Missing:
    """The type of :data:`MISSING`: a key the table does not hold (TOML has no null)."""

    def __repr__(self) -> str:
        return "<missing>"


#: What :meth:`Table.get` returns for a key that is not set.
MISSING: Final = Missing()
_T = TypeVar("_T", bound=str)


class Table:
    """One TOML table being validated: its values, its key path, and where problems go.

    Getters never raise: they report a problem and return a stand-in value, so that reading
    goes on and every problem of the file is found. Stand-ins never reach a Config, because
    :func:`~stampd.daemon.config.reader.parse_config` raises when any problem was reported.

    ``keys_by_table`` maps each table's title to its keys (the file's schema), so that a key
    written in the wrong table is pointed to its home; sub-tables share it, the problems, the
    base directory of relative paths and the environment (``$CREDENTIALS_DIRECTORY``).
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        key_path: str,
        title: str,
        problems: Problems,
        *,
        base_dir: Path,
        environ: Mapping[str, str],
        keys_by_table: Mapping[str, tuple[str, ...]],
    ) -> None:
        self.data = data
        self.key_path = key_path
        self.title = title
        self.problems = problems
        self.base_dir = base_dir
        self.environ = environ
        self.keys_by_table = keys_by_table

    def key(self, name: str) -> str:
        """The full key path of ``name`` in this table (``timestamp.tsa[0].url``)."""
        return f"{self.key_path}.{name}" if self.key_path else name

    def add(
        self, name: str, text: str, hint: str | None = None, *, value: object = MISSING
    ) -> None:
        """Report a problem with key ``name``; its value defaults to what the file holds."""
        shown = self.data.get(name) if value is MISSING else value
        self.problems.add(self.key(name), text, hint, value=shown)

    def get(self, name: str) -> Any:
        """The raw value of ``name``, or :data:`MISSING`."""
        value = self.data.get(name)
        # TOML has no null; None arrives only from config_to_dict output and means "unset".
        return MISSING if value is None else value

    def check_keys(self, allowed: tuple[str, ...]) -> None:
        """Report every key of the table that is not in ``allowed`` (unknown keys are errors)."""
        at_top = not self.key_path
        for name in self.data:
            if name in allowed:
                continue
            is_section = at_top and isinstance(self.data[name], Mapping | list)
            what = "unknown section" if is_section else "unknown key"
            close = _close_matches(name, allowed)
            homes = [
                title
                for title, keys in self.keys_by_table.items()
                if name in keys and title != self.title
            ]
            if close:
                what += f' (did you mean "{close[0]}"?)'
            elif homes:
                what += f" (it belongs in {' or '.join(homes)})"
            listing = ", ".join(allowed)
            hint = (
                f"valid sections: {listing}" if at_top else f"valid keys in {self.title}: {listing}"
            )
            # No value: an unknown key may be a secret written in the wrong place.
            self.problems.add(self.key(name), what, hint)

    def table(self, name: str, title: str) -> Table:
        """The sub-table ``name`` (empty when absent or invalid)."""
        value = self.get(name)
        if value is MISSING:
            value = {}
        elif isinstance(value, list):
            self.add(name, f"must be a single table (write {title}, not [{title}])")
            value = {}
        elif not isinstance(value, Mapping):
            self.add(name, f"{show(value)} must be a table ({title})")
            value = {}
        return self._child(value, self.key(name), title)

    def tables(self, name: str, title: str) -> list[Table]:
        """The array of tables ``name`` (empty when absent or invalid)."""
        value = self.get(name)
        if value is MISSING:
            return []
        if isinstance(value, Mapping):
            self.add(name, f"must be an array of tables (write {title}, not {title[1:-1]})")
            return []
        if not isinstance(value, list):
            self.add(name, f"{show(value)} must be an array of tables ({title})")
            return []
        found = []
        for index, item in enumerate(value):
            key = f"{self.key(name)}[{index}]"
            if isinstance(item, Mapping):
                found.append(self._child(item, key, title))
            else:
                self.problems.add(key, f"{show(item)} must be a table ({title})", value=item)
        return found

    def _child(self, data: Mapping[str, Any], key_path: str, title: str) -> Table:
        return Table(
            data,
            key_path,
            title,
            self.problems,
            base_dir=self.base_dir,
            environ=self.environ,
            keys_by_table=self.keys_by_table,
        )

    def _string(self, name: str, *, required: bool) -> str | None:
        value = self.get(name)
        if value is MISSING:
            if required:
                self.add(name, f"is missing (required in every {self.title})")
            return None
        if not isinstance(value, str):
            self.add(name, f"{show(value)} must be a string")
            return None
        return value

    def required_string(self, name: str) -> str | None:
        """The string ``name``; reported when missing or not a string."""
        return self._string(name, required=True)

    def optional_string(self, name: str) -> str | None:
        """The string ``name``, or None when unset; reported when not a string."""
        return self._string(name, required=False)

    def choice(self, name: str, choices: tuple[_T, ...], default: _T) -> _T:
        """One of ``choices`` (``default`` when unset); anything else is reported."""
        value = self._string(name, required=False)
        if value is None:
            return default
        for choice in choices:
            if value == choice:
                return choice
        expected = ", ".join(f'"{choice}"' for choice in choices)
        close = _close_matches(value, choices)
        suggestion = f' (did you mean "{close[0]}"?)' if close else ""
        self.add(name, f"{show(value)} must be one of {expected}{suggestion}")
        return default

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """A list of strings (``default`` when unset or invalid; each bad item reported)."""
        value = self.get(name)
        if value is MISSING:
            return default
        if isinstance(value, str):
            self.add(name, f"{show(value)} must be a list of strings (try {show([value])})")
            return default
        if not isinstance(value, list):
            self.add(name, f"{show(value)} must be a list of strings")
            return default
        valid = True
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.problems.add(
                    f"{self.key(name)}[{index}]", f"{show(item)} must be a string", value=item
                )
                valid = False
        return tuple(value) if valid else default

    def duration(self, name: str, default: str, *, allow_zero: bool) -> float:
        """A duration string in seconds (:mod:`~stampd.daemon.config.durations`)."""
        # Imported here: `stampd status` reads two paths through a Table and no duration, and
        # durations compiles its patterns at import.
        from stampd.daemon.config.durations import parse_duration  # noqa: PLC0415

        value = self.get(name)
        if value is MISSING:
            return parse_duration(default)
        if isinstance(value, int | float) and not isinstance(value, bool):
            # Durations are strings so that the unit is always written down (DESIGN §8).
            self.add(name, f'{show(value)} must be a string with a unit (try "{value}s")')
            return parse_duration(default)
        if not isinstance(value, str):
            self.add(name, f"{show(value)} must be a string with a unit (like {show(default)})")
            return parse_duration(default)
        try:
            seconds = parse_duration(value)
        except ValueError as error:
            self.add(name, f"{show(value)} {error}")
            return parse_duration(default)
        if seconds == 0 and not allow_zero:
            self.add(name, f"{show(value)} must be more than 0s (like {show(default)})")
            return parse_duration(default)
        return seconds

    def _resolve(self, name: str, text: str) -> Path | None:
        if not text or "\0" in text:
            self.add(name, f"{show(text)} must be a path")
            return None
        # Lexically normalised, so that "a/../b" and "b" compare equal in the overlap checks;
        # symlinks are left alone because the paths need not exist yet.
        return Path(os.path.normpath(self.base_dir / text))

    def path(self, name: str, default: str) -> Path:
        """A path, relative to the configuration's directory; ``default`` when unset."""
        text = self._string(name, required=False)
        resolved = None if text is None else self._resolve(name, text)
        return resolved or Path(default)

    def required_path(self, name: str) -> Path | None:
        """A path that must be set; None when missing or invalid (and reported)."""
        text = self._string(name, required=True)
        return None if text is None else self._resolve(name, text)

    def optional_path(self, name: str) -> Path | None:
        """A path, or None when unset or invalid (and reported)."""
        text = self._string(name, required=False)
        return None if text is None else self._resolve(name, text)

    def secret_path(self, name: str) -> Path | None:
        """A file holding a secret; ``$CREDENTIALS_DIRECTORY/NAME`` names a systemd
        credential (``LoadCredential=``), which only the service's own environment has."""
        text = self._string(name, required=False)
        if text is None or not text.startswith(CREDENTIALS_PREFIX):
            return None if text is None else self._resolve(name, text)
        directory = self.environ.get("CREDENTIALS_DIRECTORY")
        credential = text[len(CREDENTIALS_PREFIX) :]
        if not credential or "/" in credential or credential in (".", ".."):
            self.add(name, f"{show(text)} must name one credential: $CREDENTIALS_DIRECTORY/NAME")
            return None
        if not directory:
            self.add(
                name,
                f"{show(text)}: $CREDENTIALS_DIRECTORY is not set",
                "systemd sets it for the stampd service, from LoadCredential= in its unit;"
                " elsewhere, set it or name the file directly",
            )
            return None
        return Path(directory) / credential


def _close_matches(word: str, possibilities: tuple[str, ...]) -> list[str]:
    """The closest of ``possibilities`` to a misspelt ``word`` (at most one), for a message."""
    # Imported here, on the error path only: difflib costs every `stampd status` ~1 ms to load.
    import difflib  # noqa: PLC0415

    return difflib.get_close_matches(word, possibilities, n=1)


def show(value: object) -> str:
    """``value`` as it would be written in TOML, shortened to keep messages on one line."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, date | time):
        return value.isoformat()
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
