from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import BaseModel

from durable.core import Backoff, ResultTypeError, SerializationError, step
from durable.core._limits import KEY_LENGTH, LATEST, check_key, later
from durable.core._logs import Throttle
from durable.core.codec import codec_for
from durable.core.steps import StepOptions

if TYPE_CHECKING:
    from collections.abc import Iterator


class Model(BaseModel):
    name: str


def test_check_key_accepts_up_to_the_key_length() -> None:
    assert check_key("x" * KEY_LENGTH, "run_id") == "x" * KEY_LENGTH


@pytest.mark.parametrize(("value", "match"), [("", "must not be empty"), ("x" * 192, "191")])
def test_check_key_names_the_argument_and_the_limit(value: str, match: str) -> None:
    with pytest.raises(ValueError, match=f"run_id.*{match}"):
        check_key(value, "run_id")


def test_check_key_refuses_a_non_string() -> None:
    with pytest.raises(TypeError, match="signal token must be a str"):
        check_key(7, "signal token")


def test_later_refuses_a_time_a_store_cannot_hold() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert later(start, timedelta(days=1), "sleep") == start + timedelta(days=1)
    with pytest.raises(ValueError, match=r"sleep: .* latest time a store can hold"):
        later(start, timedelta(seconds=1e12), "sleep")
    with pytest.raises(ValueError, match="sleep"):
        later(LATEST, timedelta(microseconds=1), "sleep")


@pytest.mark.parametrize(
    ("value", "replayed"),
    [
        ({7: "x"}, {"7": "x"}),
        ((1, 2), [1, 2]),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05Z"),
        (Decimal("1.5"), "1.5"),
        ({"zeta": 1, "beta": {3: (4,)}}, {"zeta": 1, "beta": {"3": [4]}}),
    ],
)
def test_an_untyped_result_is_what_a_replay_decodes(value: object, replayed: object) -> None:
    stored, seen = codec_for(Any).record(value, "step 's' result")
    assert seen == replayed == stored
    assert type(seen) is type(replayed)


def test_a_typed_result_comes_back_as_its_type() -> None:
    stored, seen = codec_for(Model).record({"name": "a"}, "step 's' result")
    assert stored == {"name": "a"}
    assert seen == Model(name="a")


@pytest.mark.parametrize(("annotation", "value"), [(str, None), (int, "abc"), (Model, 3)])
def test_a_result_of_the_wrong_type_is_refused_naming_both_types(
    annotation: type, value: object
) -> None:
    with pytest.raises(ResultTypeError, match=r"step 's' result: returned \w+, declared"):
        codec_for(annotation).record(value, "step 's' result")


def test_a_generator_result_is_refused_naming_the_step() -> None:
    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(
        SerializationError, match=r"step 's' result: a generator can be read only once"
    ):
        codec_for(Any).record(numbers(), "step 's' result")
    with pytest.raises(SerializationError, match="read only once"):
        codec_for(Any).record(iter([1, 2]), "step 's' result")


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan")])
def test_a_timeout_must_be_positive_and_finite(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive, finite duration"):
        StepOptions(timeout=timeout)


def test_retries_must_be_a_non_negative_int() -> None:
    with pytest.raises(TypeError, match="retries must be an int"):
        StepOptions(retries=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retries must be >= 0"):
        StepOptions(retries=-1)


def test_a_sync_step_cannot_have_a_timeout() -> None:
    def blocking() -> int:
        return 1

    with pytest.raises(TypeError, match=r"step .*blocking.: a timeout needs an async function"):
        step(timeout=1)(blocking)


def test_an_async_step_can_have_a_timeout() -> None:
    async def quick() -> int:
        return 1

    assert step(timeout=1)(quick).options.timeout == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"initial": -1}, "initial"), ({"factor": 0.5}, "factor"), ({"jitter": 2}, "jitter")],
)
def test_backoff_refuses_nonsense(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"Backoff.{field}"):
        Backoff(**kwargs)


def test_backoff_of_a_huge_attempt_is_the_maximum() -> None:
    assert Backoff(initial=1, factor=10, maximum=60, jitter=0).delay(10_000, "k") == 60


def test_throttle_logs_a_kind_once_per_period_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttle = Throttle(logging.getLogger("durable.test"), every=3600)
    with caplog.at_level(logging.WARNING, logger="durable.test"):
        for _ in range(5):
            throttle.log("outage", logging.WARNING, "store down")
        throttle.log("other", logging.WARNING, "something else")
    assert [r.getMessage() for r in caplog.records] == ["store down", "something else"]
