"""The full check of a configuration file, shared by ``stampd config check`` and ``stampd run``.

Configuration is checked once, fully: the file's settings (:mod:`stampd.daemon.config.reader`) and
what they name on disk — the trust roots and the secret of every configured TSA
(:func:`stampd.daemon.evidence.tsa_setup.check_tsas`) — in one pass that reports every
problem, so ``config check`` says all that ``run`` would refuse, and ``run`` refuses with the
same list (exit 2) before it creates its index or its socket.

Every ``[[timestamp.tsa]]`` is checked, not only those a watch takes ``tsr`` evidence from: a
configured TSA is also used by ``stampd verify`` (its roots), and a reload that turns ``tsr``
on for a watch must not find a broken TSA then. What stays for the start itself is what depends
on the moment: whether the ``daemon.metrics`` address is free, whether the state directory
can be created.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stampd.daemon.config.locate import read_config_file
from stampd.daemon.config.model import Config
from stampd.daemon.config.problems import config_error
from stampd.daemon.config.reader import parse_settings
from stampd.daemon.evidence.tsa_setup import SecretWarning, check_tsas


@dataclass(frozen=True)
class CheckedConfig:
    """A configuration that passed every check, and what works but deserves a warning."""

    config: Config
    warnings: tuple[SecretWarning, ...]


def check_config(path: Path) -> CheckedConfig:
    """Read, validate and check the configuration file at ``path``.

    Raises one :class:`~stampd.daemon.config.problems.ConfigError` listing every problem: the
    file's settings and, for each TSA that could be read, its trust file and secret file.
    """
    parsed = parse_settings(read_config_file(path), source=path)
    # A key already reported (a trust file that does not exist) is not reported twice.
    reported = frozenset(problem.key for problem in parsed.problems if problem.key)
    runtime = check_tsas(parsed.tsas, skip=reported)
    problems = (*parsed.problems, *runtime.problems)
    if parsed.config is None or problems:
        raise config_error(path, problems)
    return CheckedConfig(parsed.config, runtime.warnings)
