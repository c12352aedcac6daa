"""What is wrong with a configuration: one :class:`ConfigProblem` per setting, and the
:class:`ConfigError` that carries them all (DESIGN §4 rule 2: only bad configuration stops the
daemon, with a message naming the key).

The same values serve the text output (one line per problem, ``key: problem (hint)``) and
``stampd config check --json`` (a list of ``{key, value, problem, hint}`` objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stampd.store.errors import ErrorClass, StampdError


@dataclass(frozen=True)
class ConfigProblem:
    """One invalid setting: where it is, what was written there, and what is wrong with it.

    ``key`` is the key path (``timestamp.tsa[1].trust``), or None when the problem is the file
    as a whole (missing, not TOML). ``value`` is the offending value as written, JSON-ready, or
    None when the key is missing, holds a table, or could hold a misplaced secret (an unknown
    key). ``problem`` reads on its own after the key; ``hint`` says what to do, when that is
    not already in ``problem``.
    """

    key: str | None
    value: Any
    problem: str
    hint: str | None = None

    def line(self) -> str:
        """The problem as one line: ``key: problem (hint)``."""
        text = f"{self.key}: {self.problem}" if self.key else self.problem
        # Rendered like StampdError.__str__, so one problem reads the same alone or in a list.
        return f"{text} ({self.hint})" if self.hint else text

    def __str__(self) -> str:
        return self.line()

    def to_dict(self) -> dict[str, Any]:
        """The problem as JSON-ready data (``stampd config check --json``)."""
        return {"key": self.key, "value": self.value, "problem": self.problem, "hint": self.hint}


class ConfigError(StampdError):
    """The configuration file is missing, unreadable, not TOML, or has invalid settings.

    ``problems`` lists every invalid setting as a :class:`ConfigProblem` (``lines`` as text,
    without the file name). An error raised without a list (a reload refused for a setting
    that needs a restart, an address in use) counts as one problem without a key.
    """

    error_class = ErrorClass.CONFIG

    def __init__(
        self, message: str, *, hint: str | None = None, problems: Sequence[ConfigProblem] = ()
    ) -> None:
        super().__init__(message, hint=hint)
        self.problems: tuple[ConfigProblem, ...] = tuple(problems) or (
            ConfigProblem(None, None, message, hint),
        )

    @property
    def lines(self) -> tuple[str, ...]:
        """Each problem as one line, ``key: problem (hint)``."""
        return tuple(problem.line() for problem in self.problems)

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-ready data, with its problems as a list of objects."""
        return {**super().to_dict(), "problems": [p.to_dict() for p in self.problems]}


def config_error(source: Path | None, problems: Sequence[ConfigProblem]) -> ConfigError:
    """One :class:`ConfigError` listing ``problems`` (at least one) found in ``source``.

    One problem reads as one line with its hint; several as a count and one line each, so the
    operator sees everything to fix at once.
    """
    prefix = f"{source}: " if source is not None else ""
    if len(problems) == 1:
        (only,) = problems
        text = f"{only.key}: {only.problem}" if only.key else only.problem
        return ConfigError(f"{prefix}{text}", hint=only.hint, problems=problems)
    listing = "".join(f"\n  - {problem.line()}" for problem in problems)
    return ConfigError(f"{prefix}{len(problems)} errors{listing}", problems=problems)
