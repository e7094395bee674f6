"""The transport suite's own tests: it passes on the in-process transport, fails on broken ones.

Run as a third party runs it (see ``suite_runs``); each broken transport in
``broken_transports`` runs only the tests meant to catch it.
"""

from __future__ import annotations

import pytest
from suite_runs import TRIO, Outcomes, run

from durable.conformance import TransportSuite

HANDLERS = ("handle_task", "handle_result", "handle_nudge")
ERRORS = ("RuntimeError", "StoreUnavailableError")

# Each broken transport, and the suite tests that must fail against it.
BROKEN: dict[str, set[str]] = {
    "ResultsToEveryoneTransport": {
        "test_a_result_reaches_only_driving_receivers[send_result]",
        "test_a_result_reaches_only_driving_receivers[handle_task]",
    },
    "StepBlindTransport": {"test_a_task_reaches_only_receivers_that_serve_its_step"},
    "NudgeEveryoneTransport": {"test_a_nudge_reaches_every_driving_receiver_and_no_other"},
    "NoRedeliveryTransport": {
        "test_a_task_whose_handler_raised_is_delivered_again",
        "test_a_result_whose_handler_raised_is_delivered_again",
    },
    "LeakyHandlerTransport": {
        f"test_a_raising_handler_does_not_stop_later_deliveries[{handler}-{error}]"
        for handler in HANDLERS
        for error in ERRORS
    },
    "SortedKeysTransport": {
        "test_task_fields_arrive_intact[unsorted-keys]",
        "test_result_fields_arrive_intact[unsorted-keys]",
    },
    "IntegralFloatsTransport": {
        "test_task_fields_arrive_intact[floats]",
        "test_a_handled_tasks_result_arrives_intact[floats]",
    },
    "TrustingTransport": {
        "test_a_malformed_message_is_dropped_with_a_log[task-of-protocol-2]",
        "test_a_malformed_message_is_dropped_with_a_log[result-of-protocol-2]",
    },
    "SilentTransport": {
        "test_a_malformed_message_is_dropped_with_a_log[task-without-step_id]",
        "test_a_malformed_message_is_dropped_with_a_log[result-without-run_id]",
    },
    "RaisingWhenUnservedTransport": {"test_sending_with_no_receiver_does_not_raise"},
    "CloseOnceTransport": {"test_aclose_twice_is_harmless"},
}

HEADER = """\
from __future__ import annotations

import pytest

import broken_transports
from durable.conformance import SuiteOptions, TransportSuite
from durable.transports.inprocess import InProcessTransport


"""

SUITE = """\
class Test{name}(TransportSuite):
    options = SuiteOptions({options})

    @pytest.fixture
    async def durable_transport(self):
        transport = {factory}()
        yield lambda: transport
        await transport.aclose()
{extra}

"""

FORGOT = """\
class TestForgotTheTransport(TransportSuite):
    pass
"""


def _suite(name: str, factory: str, *, options: str = "", extra: str = "") -> str:
    return SUITE.format(name=name, factory=factory, options=options, extra=extra)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    root = tmp_path_factory.mktemp("third_party_transports")
    broken = "".join(
        _suite(name, f"broken_transports.{name}", options="delivery_timeout=1.0") for name in BROKEN
    )
    reference = _suite("InProcess", "InProcessTransport") + _suite(
        "InProcessOnTrio", "InProcessTransport", extra=TRIO
    )
    files = {
        "test_broken_transports.py": HEADER + broken,
        "test_reference_transports.py": HEADER + reference + FORGOT,
    }
    selected = [
        f"{root / 'test_broken_transports.py'}::Test{transport}::{test}"
        for transport, tests in BROKEN.items()
        for test in sorted(tests)
    ]
    reference_file = root / "test_reference_transports.py"
    selected += [
        f"{reference_file}::TestInProcess",
        f"{reference_file}::TestInProcessOnTrio",
        f"{reference_file}::TestForgotTheTransport::test_aclose_twice_is_harmless",
    ]
    return run(root, files, selected)


def _suite_tests(outcomes: Outcomes) -> set[str]:
    names = {name for name in dir(TransportSuite) if name.startswith("test_")}
    tests = set(outcomes.of("TestInProcess"))
    assert {test.partition("[")[0] for test in tests} == names
    return tests


def test_suite_passes_against_the_in_process_transport(outcomes: Outcomes) -> None:
    assert outcomes.of("TestInProcess") == dict.fromkeys(_suite_tests(outcomes), "passed")


def test_suite_passes_on_trio(outcomes: Outcomes) -> None:
    assert outcomes.of("TestInProcessOnTrio") == dict.fromkeys(_suite_tests(outcomes), "passed")


@pytest.mark.parametrize("transport", sorted(BROKEN))
def test_suite_fails_against_a_broken_transport(outcomes: Outcomes, transport: str) -> None:
    assert outcomes.of(f"Test{transport}") == dict.fromkeys(BROKEN[transport], "failed")
    for test in BROKEN[transport]:
        assert "AssertionError" in outcomes.reason(f"Test{transport}", test)


def test_suite_failures_explain_themselves(outcomes: Outcomes) -> None:
    reason = outcomes.reason(
        "TestSortedKeysTransport", "test_task_fields_arrive_intact[unsorted-keys]"
    )
    assert "StepTask changed on the way: $['input']: sent keys ['zeta', 'alpha'" in reason
    reason = outcomes.reason(
        "TestLeakyHandlerTransport",
        "test_a_raising_handler_does_not_stop_later_deliveries[handle_nudge-RuntimeError]",
    )
    assert "serve(victim) raised" in reason
    assert "victim.handle_nudge raised on purpose" in reason


def test_a_missing_durable_transport_fixture_says_how_to_fix_it(outcomes: Outcomes) -> None:
    assert outcomes.of("TestForgotTheTransport") == {"test_aclose_twice_is_harmless": "error"}
    reason = outcomes.reason("TestForgotTheTransport", "test_aclose_twice_is_harmless")
    assert "TestForgotTheTransport must override the durable_transport fixture" in reason
