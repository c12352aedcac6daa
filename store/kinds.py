"""The one list of evidence kinds (DESIGN §1, §5): their names, sidecars, actions and config.

Config, index, sidecar naming, ``verify``, ``show``, ``status``, metrics and the CLI read this
registry instead of keeping their own lists. Adding a kind is one :class:`EvidenceKind` member
and one :class:`KindSpec` entry in :data:`BUILT_IN` here, plus the kind's own modules (a format
in ``store/formats`` and a verifier in ``store``, a strategy and provider in
``daemon/evidence``, which the entry names): see ``docs/adding-an-evidence-kind.md``.

Tests register a kind of their own with :func:`registered` (a fake kind that goes through the
whole pipeline), so the registry is a mapping keyed by name; the enum is the exhaustive list of
the kinds stampd itself knows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum


class EvidenceKind(StrEnum):
    """Every evidence kind stampd knows, built or planned (DESIGN §1)."""

    TSR = "tsr"
    OTS = "ots"
    P7S = "p7s"
    ERS = "ers"
    ATTEST = "attest"


class JobAction(StrEnum):
    """What a job asks for (DESIGN §1, "job")."""

    #: Get a first proof for a version.
    OBTAIN = "obtain"
    #: Complete a pending proof (an ``.ots`` anchor once its block is mined).
    UPGRADE = "upgrade"
    #: Extend a proof before its authority's certificate expires (RFC 4998).
    RENEW = "renew"


@dataclass(frozen=True)
class KindSpec:
    """One evidence kind as the rest of stampd sees it."""

    name: str
    #: What an operator reads: "RFC 3161 timestamp".
    title: str
    #: The sidecar's extension (``FILE.tsr``); None for evidence kept in the index only.
    sidecar: str | None
    #: The job actions this kind has; ``obtain`` for every kind a watch can ask for.
    actions: frozenset[JobAction]
    #: The configuration table that configures its providers (``[timestamp]``), if any.
    config_section: str | None
    #: Built and accepted by the configuration. A planned kind is refused "not available yet".
    available: bool
    #: A watch may list it in ``evidence``; ``ers`` is made by renewal, never asked for.
    watchable: bool = True
    #: Whether ``stampd verify`` checks it (offline, from the sidecar).
    verifiable: bool = False
    #: The factory of its offline verifier for ``stampd verify``, as ``"module:attribute"``
    #: (a ``VerifierFactory``, daemon/evidence/entries.py). A name, not an import: ``store``
    #: never imports ``daemon``, and the CLI imports a kind's modules only when it verifies.
    verifier: str | None = None
    #: The factory of its job strategy for the daemon's runner, as ``"module:attribute"`` (a
    #: ``StrategyFactory``, daemon/evidence/entries.py); None while nothing runs its jobs.
    strategy: str | None = None


BUILT_IN: Mapping[str, KindSpec] = {
    spec.name: spec
    for spec in (
        KindSpec(
            EvidenceKind.TSR,
            "RFC 3161 timestamp",
            sidecar="tsr",
            actions=frozenset({JobAction.OBTAIN}),
            config_section="timestamp",
            available=True,
            verifiable=True,
            verifier="stampd.daemon.evidence.tsr_anchors:verifier_from_options",
            strategy="stampd.daemon.evidence.tsr:strategy_from_config",
        ),
        KindSpec(
            EvidenceKind.OTS,
            "OpenTimestamps anchors",
            sidecar="ots",
            actions=frozenset({JobAction.OBTAIN, JobAction.UPGRADE}),
            config_section="anchor",
            available=True,
            verifiable=True,
            verifier="stampd.daemon.evidence.ots_verify_setup:verifier_from_options",
            strategy="stampd.daemon.evidence.ots:strategy_from_config",
        ),
        KindSpec(
            EvidenceKind.P7S,
            "CAdES seals",
            sidecar="p7s",
            actions=frozenset({JobAction.OBTAIN}),
            config_section="seal",
            available=False,
        ),
        KindSpec(
            EvidenceKind.ERS,
            "RFC 4998 evidence records",
            sidecar="ers",
            actions=frozenset({JobAction.RENEW}),
            config_section="restamp",
            available=False,
            watchable=False,
        ),
        KindSpec(
            EvidenceKind.ATTEST,
            "attestation service receipts",
            sidecar=None,
            actions=frozenset({JobAction.OBTAIN}),
            config_section="attest",
            available=False,
        ),
    )
}
assert set(BUILT_IN) == set(EvidenceKind), "every EvidenceKind has exactly one KindSpec"

_registry: dict[str, KindSpec] = dict(BUILT_IN)


def spec(name: str) -> KindSpec:
    """The registered kind called ``name``; KeyError for one stampd does not know."""
    return _registry[name]


def known() -> tuple[KindSpec, ...]:
    """Every registered kind, built-in ones first, in a stable order."""
    return tuple(_registry.values())


def names() -> tuple[str, ...]:
    """The names of every registered kind."""
    return tuple(_registry)


def available() -> tuple[KindSpec, ...]:
    """The kinds built today: accepted by the configuration, run by the daemon."""
    return tuple(kind for kind in _registry.values() if kind.available)


def with_sidecars() -> tuple[KindSpec, ...]:
    """The kinds that keep a sidecar next to the file (or under the mirror)."""
    return tuple(kind for kind in _registry.values() if kind.sidecar is not None)


def sidecar_extension(name: str) -> str:
    """The extension of kind ``name``'s sidecar; ValueError when it has none."""
    kind = _registry.get(name)
    if kind is None or kind.sidecar is None:
        raise ValueError(f"no sidecar kind {name!r} (known: {', '.join(sidecar_names())})")
    return kind.sidecar


def sidecar_names() -> tuple[str, ...]:
    return tuple(kind.name for kind in with_sidecars())


@contextmanager
def registered(kind: KindSpec) -> Iterator[KindSpec]:
    """Register ``kind`` for the duration of a ``with`` block (tests' own kinds)."""
    if kind.name in _registry:
        raise ValueError(f"evidence kind {kind.name!r} is registered already")
    _registry[kind.name] = kind
    try:
        yield kind
    finally:
        del _registry[kind.name]
