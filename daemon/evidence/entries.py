"""A kind's runtime, found through its registry entry: the strategy and the verifier factories.

store/kinds.py names each kind's factories as ``"module:attribute"`` strings (``store`` never
imports ``daemon``); this module resolves them on first use, so ``stampd verify`` imports only
the kinds it checks and ``stampd --version`` none at all (DESIGN §11, CLI start). It also
states what the two factories are called with:

- a :class:`StrategyFactory` gets the whole configuration and the daemon's HTTP client and
  returns the kind's :class:`~stampd.daemon.evidence.strategy.Strategy` (or raises
  ``ConfigError`` naming the key: a reload is refused before anything changes);
- a :class:`VerifierFactory` gets :class:`VerifyOptions` — the configuration, if there is
  one, and ``stampd verify``'s trust options — and returns the kind's
  :class:`~stampd.store.verify.Verifier`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from stampd.store.kinds import KindSpec

if TYPE_CHECKING:
    import httpx

    from stampd.daemon.config.model import Config
    from stampd.daemon.evidence.strategy import Strategy
    from stampd.store.verify import Verifier


@dataclass(frozen=True)
class VerifyOptions:
    """What ``stampd verify`` knows when it builds a kind's verifier."""

    #: The configuration (its providers' trust roots), or None when the options suffice.
    config: Config | None
    #: ``--trust`` files: the roots to use instead of the configured ones.
    trust: tuple[Path, ...] = ()
    #: ``--untrusted`` file: certificates a proof may lack (never trusted as roots).
    untrusted: Path | None = None


class StrategyFactory(Protocol):
    """Builds a kind's strategy from a configuration (``KindSpec.strategy``)."""

    def __call__(self, config: Config, *, http: httpx.AsyncClient) -> Strategy: ...


class VerifierFactory(Protocol):
    """Builds a kind's offline verifier for ``stampd verify`` (``KindSpec.verifier``)."""

    def __call__(self, options: VerifyOptions) -> Verifier: ...


def strategy_factory(kind: KindSpec) -> StrategyFactory:
    """The factory of ``kind``'s strategy; LookupError when the kind has none."""
    if kind.strategy is None:
        raise LookupError(f"evidence kind {kind.name!r} has no strategy: nothing runs its jobs")
    return cast("StrategyFactory", _resolve(kind.strategy, kind.name))


def verifier_factory(kind: KindSpec) -> VerifierFactory:
    """The factory of ``kind``'s verifier; LookupError when the kind has none."""
    if kind.verifier is None:
        raise LookupError(f"evidence kind {kind.name!r} has no offline verifier")
    return cast("VerifierFactory", _resolve(kind.verifier, kind.name))


def _resolve(entry: str, kind: str) -> object:
    module, _, attribute = entry.partition(":")
    if not module or not attribute:
        raise ValueError(f"evidence kind {kind!r}: {entry!r} is not 'module:attribute'")
    found: object = getattr(importlib.import_module(module), attribute)
    if not callable(found):
        raise TypeError(f"evidence kind {kind!r}: {entry} is not callable")
    return found
