from __future__ import annotations

from datetime import timedelta

import pytest

from durable.core import Backoff, SerializationError
from durable.core._time import to_timedelta
from durable.core.codec import codec_for


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d", timedelta(days=1)),
        ("250ms", timedelta(milliseconds=250)),
        (2.5, timedelta(seconds=2.5)),
        (timedelta(days=2), timedelta(days=2)),
    ],
)
def test_durations_parse(text: str | float | timedelta, expected: timedelta) -> None:
    assert to_timedelta(text) == expected


@pytest.mark.parametrize("bad", ["", "5", "1x", "-1s", -3, True])
def test_bad_durations_are_rejected(bad: str | int) -> None:
    with pytest.raises(ValueError, match="duration"):
        to_timedelta(bad)


def test_backoff_grows_is_capped_and_is_stable_for_a_key() -> None:
    backoff = Backoff(initial=1, factor=2, maximum=5, jitter=0.5)
    delays = [backoff.delay(n, "run:1") for n in range(1, 6)]
    assert delays == [backoff.delay(n, "run:1") for n in range(1, 6)]
    assert 0.5 <= delays[0] <= 1
    assert 1 <= delays[1] <= 2
    assert all(d <= 5 for d in delays)


def test_codec_names_the_subject_of_an_unserializable_value() -> None:
    with pytest.raises(SerializationError, match=r"step 'x' result.*object"):
        codec_for(object).encode(object(), "step 'x' result")
