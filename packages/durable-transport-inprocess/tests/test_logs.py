from __future__ import annotations

import logging

import pytest

from durable.transports.inprocess._logs import RateLimitedLog

LOGGER = "durable.transports.inprocess.test"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limited(clock: Clock) -> RateLimitedLog:
    return RateLimitedLog(logging.getLogger(LOGGER), interval=30.0, clock=clock)


def test_records_of_one_key_within_the_interval_are_folded_and_counted(
    limited: RateLimitedLog, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        for n in range(5):
            limited.log(logging.ERROR, "store down", "delivery %d failed", n)
            clock.now += 1
        clock.now = 30.0
        limited.log(logging.ERROR, "store down", "delivery %d failed", 5)
    assert [r.getMessage() for r in caplog.records] == [
        "delivery 0 failed",
        "delivery 5 failed (and 4 more like it since the last one logged)",
    ]


def test_keys_are_limited_independently(
    limited: RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, LOGGER):
        for key in ("nudge", "task", "nudge", "task"):
            limited.log(logging.WARNING, key, "%s failed", key)
    assert [r.getMessage() for r in caplog.records] == ["nudge failed", "task failed"]


def test_the_first_record_carries_the_traceback(
    limited: RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    error = RuntimeError("database unreachable")
    with caplog.at_level(logging.WARNING, LOGGER):
        limited.log(logging.ERROR, "task", "handling failed", exc_info=error)
    (record,) = caplog.records
    assert record.exc_info is not None
    assert record.exc_info[1] is error
