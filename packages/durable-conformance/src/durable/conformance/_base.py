"""``SuiteBase``: the machinery every conformance suite shares.

A suite is a plain pytest class that is not collected on its own (its name does not start with
``Test``); a third party subclasses it, overrides the ``durable_store`` fixture and, when it
must, sets ``options`` and ``expected_failures``. Nothing here needs a plugin of ours: anyio's
pytest plugin runs the async tests.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import pytest

from durable.conformance._options import NEEDS_ATTRIBUTE, SuiteOptions

if TYPE_CHECKING:
    from durable.core import StateStore


@pytest.mark.anyio
class SuiteBase:
    """Shared base of the conformance suites.

    Attributes:
        options: What the store under test can do; see :class:`SuiteOptions`.
        expected_failures: Declared gaps, test name to reason (an issue link is ideal). Each
            listed test still runs, as a strict xfail: while it fails the run stays green and
            the reason is shown; once it passes the run fails, so a fixed gap forces deleting
            its declaration. A name the suite does not have is an error when the class is
            defined.
    """

    options: ClassVar[SuiteOptions] = SuiteOptions()
    expected_failures: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        _check_declarations(cls)

    @pytest.fixture
    def anyio_backend(self) -> str:
        """The anyio backend the async tests run on; override to try others (``"trio"``)."""
        return "asyncio"

    @pytest.fixture
    def durable_store(self) -> StateStore:
        """The store under test: override it to yield a fresh, empty store for every test."""
        raise NotImplementedError(
            f"{type(self).__name__} must override the durable_store fixture: define "
            "`@pytest.fixture async def durable_store(self)` on the class, yielding a fresh, "
            "empty store with its schema created (see docs/conformance.md)"
        )

    @pytest.fixture(autouse=True)
    def _durable_suite_declarations(self, request: pytest.FixtureRequest) -> None:
        """Apply ``needs`` skips and ``expected_failures`` before any other fixture runs."""
        for option in getattr(request.function, NEEDS_ATTRIBUTE, ()):
            value = getattr(self.options, option)
            if not value:
                pytest.skip(
                    f"needs SuiteOptions.{option} (it is {value!r} for {type(self).__name__})"
                )
        name = request.node.name.partition("[")[0]
        reason = self.expected_failures.get(name)
        if reason is not None:
            request.applymarker(pytest.mark.xfail(strict=True, reason=f"declared gap: {reason}"))


def _check_declarations(cls: type[SuiteBase]) -> None:
    if not isinstance(cls.options, SuiteOptions):
        raise TypeError(
            f"{cls.__name__}.options must be a SuiteOptions instance, "
            f"not {type(cls.options).__name__}"
        )
    if not isinstance(cls.expected_failures, Mapping):
        raise TypeError(f"{cls.__name__}.expected_failures must be a dict of test name to reason")
    tests = sorted(name for name in dir(cls) if name.startswith("test_"))
    problems: list[str] = []
    for name, reason in cls.expected_failures.items():
        if name not in tests:
            close = difflib.get_close_matches(str(name), tests, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{name!r} is not a test of {cls.__name__}{hint}")
        elif not isinstance(reason, str) or not reason.strip():
            problems.append(f"{name!r} needs a reason (an issue link is ideal)")
    if problems:
        raise ValueError(f"{cls.__name__}.expected_failures: " + "; ".join(problems))
