"""Durations as written in the configuration: ``"500ms"``, ``"10s"``, ``"1h30m"``, ``"180d"``.

A duration is one or more parts, each a non-negative number (decimals allowed) followed by a
unit: ``ms``, ``s``, ``m``, ``h``, ``d`` or ``w``. A bare number is refused on purpose:
``quiet = "2"`` could mean seconds or milliseconds, and a guess would be silently wrong.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

_UNIT_SECONDS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
# "ms" comes before "m" so that "500ms" is not read as 500 minutes followed by a stray "s".
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
_BARE_NUMBER = re.compile(r"\d+(?:\.\d+)?")

# Spellings people write from habit (systemd, Go, prose), mapped to a unit we accept and the
# factor to apply to the number. They only feed the suggestion in error messages; accepting them
# would give one setting many spellings.
_UNIT_ALIASES: dict[str, tuple[str, Decimal]] = {
    **{name: ("ms", Decimal(1)) for name in ("ms", "msec", "msecs", "millisecond", "milliseconds")},
    **{
        name: ("ms", Decimal("0.001"))
        for name in ("us", "µs", "usec", "microsecond", "microseconds")
    },
    **{name: ("s", Decimal(1)) for name in ("s", "sec", "secs", "second", "seconds")},
    **{name: ("m", Decimal(1)) for name in ("m", "min", "mins", "minute", "minutes")},
    **{name: ("h", Decimal(1)) for name in ("h", "hr", "hrs", "hour", "hours")},
    **{name: ("d", Decimal(1)) for name in ("d", "day", "days")},
    **{name: ("w", Decimal(1)) for name in ("w", "wk", "wks", "week", "weeks")},
    **{name: ("d", Decimal(30)) for name in ("mo", "month", "months")},
    **{name: ("d", Decimal(365)) for name in ("y", "yr", "yrs", "year", "years")},
}
# A unit-less number after a part ("1h30") most likely means the next smaller unit.
_NEXT_SMALLER_UNIT = {"w": "d", "d": "h", "h": "m", "m": "s", "s": "ms", "ms": "ms"}
_LOOSE_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)([^\d.]*)")

_NS_PER_UNIT = (("d", 86400 * 10**9), ("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9))


def parse_duration(text: str) -> float:
    """The number of seconds ``text`` stands for.

    Raises :class:`ValueError` whose message is the reason and a suggestion, written to follow
    the quoted value, e.g. ``is not a duration (try "2s")``; the caller puts the key and the
    value in front of it.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError('is empty (try "10s")')
    if stripped.startswith("-"):
        suggestion = _suggest(stripped[1:])
        raise ValueError(
            f'is negative (try "{suggestion}")' if suggestion else "is negative (expected >= 0s)"
        )
    if _DURATION.fullmatch(text):
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
        if not math.isfinite(seconds):
            raise ValueError("is too large")
        return seconds
    if _BARE_NUMBER.fullmatch(stripped):
        raise ValueError(f'has no unit (try "{stripped}s")')
    suggestion = _suggest(stripped)
    if suggestion is not None:
        raise ValueError(f'is not a duration (try "{suggestion}")')
    raise ValueError(
        'is not a duration (expected a number with a unit, like "10s"; units: ms s m h d w)'
    )


def format_duration(seconds: float) -> str:
    """The canonical spelling of ``seconds``: largest units first, no zero parts.

    ``5400`` gives ``"1h30m"``, ``0.5`` gives ``"500ms"``, ``0`` gives ``"0s"``. Weeks are never
    used ("180d" reads better than "25w5d"). Fractions below a millisecond are kept as decimal
    milliseconds, so ``parse_duration(format_duration(x)) == x`` to the nanosecond.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration (expected a finite value >= 0)")
    # A nanosecond grid hides float noise such as 1.1 * 10**9 == 1100000000.0000002.
    remaining = round(seconds * 10**9)
    if remaining == 0:
        return "0s"
    parts = []
    for unit, size in _NS_PER_UNIT:
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    if remaining:
        parts.append(f"{remaining / 10**6:.6f}".rstrip("0").rstrip(".") + "ms")
    return "".join(parts)


def _suggest(text: str) -> str | None:
    """A valid duration close to what ``text`` probably meant, or None when there is no guess."""
    loose = "".join(text.lower().split()).replace(",", ".")
    if loose.startswith("+"):
        loose = loose[1:]
    parts: list[str] = []
    previous_unit: str | None = None
    consumed = 0
    for match in _LOOSE_PART.finditer(loose):
        if match.start() != consumed:
            return None
        consumed = match.end()
        number, unit_text = match.groups()
        if unit_text in _UNIT_ALIASES:
            unit, factor = _UNIT_ALIASES[unit_text]
        else:
            unit = _NEXT_SMALLER_UNIT[previous_unit] if previous_unit else "s"
            factor = Decimal(1)
        parts.append(f"{_plain_decimal(Decimal(number) * factor)}{unit}")
        previous_unit = unit
    if not parts or consumed != len(loose):
        return None
    candidate = "".join(parts)
    return candidate if _DURATION.fullmatch(candidate) else None


def _plain_decimal(value: Decimal) -> str:
    """``value`` without exponent or trailing zeros: 0.50 -> "0.5", 1E+1 -> "10"."""
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
