"""``SuiteOptions``: what a store or transport tells the suites, and ``needs`` to read it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from collections.abc import Callable

_F = TypeVar("_F", bound="Callable[..., Any]")

NEEDS_ATTRIBUTE = "__durable_needs__"
"""The attribute :func:`needs` sets on a test function: the option names it needs."""


class SuiteOptions(BaseModel):
    """The few things a store or transport may tell the suites; the defaults are the strict ones.

    Frozen, and unknown or mistyped fields are rejected, so a typo fails at import instead of
    quietly weakening the suite. Each field answers one question:

    Attributes:
        concurrency: How many concurrent tasks race against each other in a race test
            (``try_lock_run``, signal takers, ...)? At least 2. Lower it only when the
            database cannot open that many connections at once.
        race_repeats: How many times is each race run, with fresh rows every time? Rare
            interleavings need repeats to show up. ``0`` skips the race tests (a quick smoke
            run, never a conformance claim).
        redeliveries: (TransportSuite) How many times, at least, does the transport deliver a
            task or result again after the receiver's handler raised on it? The redelivery
            tests make a handler raise that many times in a row and expect one more delivery.
            ``0`` says the transport does not redeliver (the engine then dispatches a lost task
            again at the step's deadline) and skips those tests.
        delivery_timeout: (TransportSuite) How many seconds may a message take to arrive
            before the test fails? Raise it for a slow broker.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    concurrency: int = Field(default=50, ge=2)
    race_repeats: int = Field(default=20, ge=0)
    redeliveries: int = Field(default=3, ge=0)
    delivery_timeout: float = Field(default=10.0, gt=0)


def needs(option: str) -> Callable[[_F], _F]:
    """Mark a suite test as needing an option; it is skipped while that option is off.

    A plain decorator, not a pytest marker, so a project running ``--strict-markers`` registers
    nothing. An option is off when its value is falsy (``False`` or ``0``); the skip reason
    names the option. The suite checks the need before any fixture runs, so a skipped test
    never opens a store.

    Args:
        option: A field name of :class:`SuiteOptions`.

    Returns:
        A decorator that records the need on the test function and returns it unchanged.

    Raises:
        ValueError: ``option`` is not a field of :class:`SuiteOptions` (at decoration time).
    """
    if option not in SuiteOptions.model_fields:
        known = ", ".join(sorted(SuiteOptions.model_fields))
        raise ValueError(f"needs({option!r}): SuiteOptions has no such option (known: {known})")

    def decorate(test: _F) -> _F:
        attributes = vars(test)
        attributes[NEEDS_ATTRIBUTE] = (*attributes.get(NEEDS_ATTRIBUTE, ()), option)
        return test

    return decorate
