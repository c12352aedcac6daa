"""Durations: the strings of the configuration ("500ms", "1h30m") and their canonical spelling."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stampd.daemon.config.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10),
        ("5m", 300),
        ("2h", 7200),
        ("180d", 180 * 86400),
        ("1w", 7 * 86400),
        ("1.5s", 1.5),
        ("0.5ms", 0.0005),
        ("1h30m", 5400),
        ("2d12h", 2.5 * 86400),
        ("1m30s250ms", 90.25),
        ("0s", 0),
    ],
)
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2x", 'is not a duration (try "2s")'),
        ("2", 'has no unit (try "2s")'),
        ("1.5", 'has no unit (try "1.5s")'),
        ("-2s", 'is negative (try "2s")'),
        ("", 'is empty (try "10s")'),
        ("  ", 'is empty (try "10s")'),
        ("2S", 'is not a duration (try "2s")'),
        ("1h 30m", 'is not a duration (try "1h30m")'),
        ("2 seconds", 'is not a duration (try "2s")'),
        ("5min", 'is not a duration (try "5m")'),
        ("1h30", 'is not a duration (try "1h30m")'),
        ("1y", 'is not a duration (try "365d")'),
        ("1,5s", 'is not a duration (try "1.5s")'),
        (".5s", 'is not a duration (try "0.5s")'),
        (
            "soon",
            'is not a duration (expected a number with a unit, like "10s"; units: ms s m h d w)',
        ),
    ],
)
def test_parse_errors_give_the_reason_and_a_suggestion(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


def test_absurdly_large_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="is too large"):
        parse_duration("9" * 400 + "s")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (2, "2s"),
        (0.5, "500ms"),
        (5400, "1h30m"),
        (180 * 86400, "180d"),
        (7 * 86400, "7d"),  # weeks are accepted, but days read better
        (1.1, "1s100ms"),  # float noise (1.1e9 ns is not exact) does not leak out
        (0.0005, "0.5ms"),
        (3600 + 1, "1h1s"),
        (86400 + 0.001, "1d1ms"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, math.inf, math.nan])
def test_format_refuses_what_is_not_a_duration(seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot format"):
        format_duration(seconds)


@given(st.integers(min_value=0, max_value=10**15))
def test_format_then_parse_is_exact_to_the_microsecond(microseconds: int) -> None:
    seconds = microseconds / 10**6
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-12, abs=1e-9)


@given(st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_format_is_stable(seconds: float) -> None:
    text = format_duration(seconds)
    assert format_duration(parse_duration(text)) == text


@given(st.text())
def test_garbage_never_crashes(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError as error:
        assert str(error)
    else:
        assert seconds >= 0
