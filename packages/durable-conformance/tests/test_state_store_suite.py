"""The suite's own tests: it passes on the reference store and fails on broken ones.

The suites are run the way a third party runs them (see ``suite_runs``): generated test modules
subclass ``StateStoreSuite`` in a scratch directory and one in-process ``pytest.main`` runs
them all. The tests below then read the outcomes they care about.
"""

from __future__ import annotations

from typing import ClassVar

import pydantic
import pytest
from suite_runs import TRIO, Outcomes, run

import durable.conformance
from durable.conformance import StateStoreAdminSuite, StateStoreSuite, SuiteOptions, needs
from durable.conformance._options import NEEDS_ATTRIBUTE

PREFIX_TEST = "test_list_signal_waiters_prefix_is_literal"


class _BothSuites(StateStoreSuite, StateStoreAdminSuite):
    """What a store offering both protocols runs (not collected: no ``Test`` prefix)."""


RACE_TESTS = {
    name
    for name in dir(_BothSuites)
    if name.startswith("test_")
    and "race_repeats" in getattr(getattr(_BothSuites, name), NEEDS_ATTRIBUTE, ())
}

# Each broken store, and the suite tests that must fail against it.
BROKEN: dict[str, set[str]] = {
    "RacyLockStore": {
        "test_one_of_many_concurrent_lockers_wins",
        "test_one_of_many_concurrent_recoveries_wins_and_counts_once",
    },
    "RacyRenewStore": {"test_renew_racing_takeovers_never_both_succeed"},
    "OwnerBlindRenewStore": {
        "test_renew_run_lock_by_non_holder_fails",
        "test_renew_run_lock_of_unknown_or_released_run_fails",
    },
    "RacyWaiterTakeStore": {"test_one_of_many_concurrent_waiter_takers_wins"},
    "LifoBufferStore": {
        "test_take_buffered_signal_is_fifo_per_token",
        "test_concurrent_buffered_takers_take_each_signal_once_in_order",
    },
    "RacyBufferTakeStore": {"test_concurrent_buffered_takers_take_each_signal_once_in_order"},
    "RacyPairStore": {
        "test_concurrent_pairers_deliver_one_signal_once",
        "test_racing_senders_and_waiters_deliver_every_signal_once",
    },
    "LimitBeforeNamespaceStore": {"test_list_pending_runs_filters_namespace_before_limit"},
    "LimitBeforeWorkflowsStore": {"test_list_pending_runs_filters_workflows_before_limit"},
    "UnfencedCheckpointStore": {
        "test_save_checkpoint_with_other_owner_writes_nothing",
        "test_save_checkpoint_with_owner_on_non_running_run_writes_nothing",
        "test_save_checkpoint_with_owner_after_release_writes_nothing",
        "test_save_checkpoint_with_owner_on_unknown_run_writes_nothing",
    },
    "RacyFenceStore": {"test_fenced_saves_racing_a_takeover_never_land_after_it"},
    "ExpectBlindCheckpointStore": {
        "test_save_checkpoint_with_expect_writes_only_over_that_status_and_attempts",
        "test_save_checkpoint_with_expect_never_replaces_a_finished_result",
        "test_save_checkpoint_with_expect_of_a_missing_row_writes_nothing",
        "test_save_checkpoint_with_expect_and_owner_needs_both",
        "test_one_of_many_concurrent_expect_writers_wins",
        "test_late_result_racing_a_timeout_write_never_both_land",
        "test_pair_signal_racing_a_timeout_write_either_delivers_or_times_out",
    },
    "RacyExpectStore": {
        "test_one_of_many_concurrent_expect_writers_wins",
        "test_late_result_racing_a_timeout_write_never_both_land",
    },
    "UnfencedWaiterStore": {"test_put_signal_waiter_with_foreign_or_released_owner_writes_nothing"},
    "RacyWaiterFenceStore": {"test_fenced_waiters_racing_a_takeover_never_land_after_it"},
    "OverwritingPairStore": {
        "test_pair_signal_keeps_when_the_pending_wait_began",
        "test_pair_signal_with_a_stale_waiter_keeps_the_signal_for_a_genuine_one",
        "test_pair_signal_racing_a_timeout_write_either_delivers_or_times_out",
    },
    "MillisecondStore": {
        "test_microseconds_roundtrip",
        "test_year_9999_roundtrip",
        "test_year_2100_roundtrip",
    },
    "LostWakeReleaseStore": {
        "test_release_to_suspended_with_wake_requested_leaves_run_pending",
        "test_wake_racing_release_is_never_lost",
    },
    "CheckpointDroppingReleaseStore": {
        "test_release_run_lock_writes_its_checkpoints_with_the_release",
        "test_release_run_lock_writes_checkpoints_and_attributes_together",
        "test_release_run_lock_checkpoints_replace_existing_ones",
    },
    "ReleaseThenWriteStore": {
        "test_release_run_lock_refuses_a_checkpoint_of_another_run",
        "test_release_run_lock_by_non_holder_writes_no_checkpoint",
        "test_release_run_lock_of_a_cancelled_run_writes_no_checkpoint",
        "test_release_run_lock_refusing_a_checkpoint_changes_nothing",
    },
    "OverwritingCreateStore": {
        "test_create_run_with_existing_id_returns_false_and_changes_nothing",
    },
    "CasBlindUpdateStore": {
        "test_update_run_if_status_applies_only_from_listed_statuses",
        "test_one_of_many_concurrent_if_status_updates_wins",
    },
    "LeakyRecordsStore": {"test_records_are_detached_from_stored_state"},
    "LikePrefixStore": {"test_list_signal_waiters_prefix_is_literal"},
    "TextSortedPendingStore": {"test_times_compare_by_instant_across_offsets"},
    "NoTieBreakCursorStore": {
        "test_list_runs_cursor_pages_through_equal_created_at",
        "test_list_runs_cursor_pages_cover_every_run_once",
    },
}

HEADER = """\
from __future__ import annotations

import pytest

import broken_stores
from durable.conformance import StateStoreAdminSuite, StateStoreSuite, SuiteOptions
from durable.core import InMemoryStateStore


"""

SUITE = """\
class Test{name}({suites}):
    options = SuiteOptions({options})
    expected_failures = {gaps!r}

    @pytest.fixture
    async def durable_store(self):
        store = {factory}()
        await store.ensure_schema()
        yield store
        await store.aclose()
{extra}

"""

NO_STORE_WANTED = """\
class TestSkipsBeforeOpeningStore(StateStoreSuite, StateStoreAdminSuite):
    options = SuiteOptions(race_repeats=0)

    @pytest.fixture
    def durable_store(self):
        raise RuntimeError("the store was opened")


class TestForgotTheFixture(StateStoreSuite):
    pass
"""

UNKNOWN_GAP = """\
from durable.conformance import StateStoreSuite


class TestTypo(StateStoreSuite):
    expected_failures = {"test_yaer_9999_roundtrip": "acme#41"}
"""


def _suite(
    name: str,
    factory: str,
    *,
    options: str = "",
    gaps: dict[str, str] | None = None,
    extra: str = "",
    suites: str = "StateStoreSuite, StateStoreAdminSuite",
) -> str:
    return SUITE.format(
        name=name,
        suites=suites,
        factory=factory,
        options=options,
        gaps=gaps or {},
        extra=extra,
    )


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    root = tmp_path_factory.mktemp("third_party")
    broken = "".join(_suite(name, f"broken_stores.{name}") for name in BROKEN)
    reference = "".join(
        [
            _suite("Memory", "InMemoryStateStore"),
            _suite(
                "MemoryOnTrio",
                "InMemoryStateStore",
                options="race_repeats=3",
                extra=TRIO,
            ),
            _suite("EngineFacingOnly", "broken_stores.NoAdminStore", suites="StateStoreSuite"),
            _suite(
                "DeclaredGap",
                "broken_stores.LikePrefixStore",
                options="race_repeats=0",
                gaps={PREFIX_TEST: "acme#7: LIKE wildcards"},
            ),
            _suite(
                "FixedGap",
                "InMemoryStateStore",
                gaps={"test_year_9999_roundtrip": "acme#41: DATETIME stops at 2038"},
            ),
        ]
    )
    files = {
        "test_broken.py": HEADER + broken,
        "test_reference.py": HEADER + reference,
        "test_no_store.py": HEADER + NO_STORE_WANTED,
        "test_unknown_gap.py": UNKNOWN_GAP,
    }
    # Broken stores run only the tests meant to catch them; the rest run whole.
    selected = [
        f"{root / 'test_broken.py'}::Test{store}::{test}"
        for store, tests in BROKEN.items()
        for test in sorted(tests)
    ]
    selected += [
        str(root / "test_reference.py") + "::TestMemory",
        str(root / "test_reference.py") + "::TestMemoryOnTrio",
        str(root / "test_reference.py") + "::TestEngineFacingOnly",
        *(
            f"{root / 'test_reference.py'}::TestDeclaredGap::{test}"
            for test in (PREFIX_TEST, "test_take_signal_waiter_returns_and_deletes_waiter")
        ),
        str(root / "test_reference.py") + "::TestFixedGap::test_year_9999_roundtrip",
        *(
            f"{root / 'test_no_store.py'}::TestSkipsBeforeOpeningStore::{test}"
            for test in sorted({*RACE_TESTS, "test_year_9999_roundtrip"})
        ),
        str(root / "test_no_store.py") + "::TestForgotTheFixture::test_year_9999_roundtrip",
        str(root / "test_unknown_gap.py"),
    ]
    return run(root, files, selected)


def _suite_tests(suite: type[object] = _BothSuites) -> set[str]:
    return {name for name in dir(suite) if name.startswith("test_")}


def test_suite_passes_against_the_in_memory_store(outcomes: Outcomes) -> None:
    got = outcomes.of("TestMemory")
    assert got == dict.fromkeys(_suite_tests(), "passed")


def test_suite_passes_on_trio(outcomes: Outcomes) -> None:
    got = outcomes.of("TestMemoryOnTrio")
    assert got == dict.fromkeys(_suite_tests(), "passed")


def test_state_store_suite_calls_no_admin_operation(outcomes: Outcomes) -> None:
    got = outcomes.of("TestEngineFacingOnly")
    assert got == dict.fromkeys(_suite_tests(StateStoreSuite), "passed")


def test_admin_suite_is_separate_from_the_state_store_suite() -> None:
    admin = _suite_tests(StateStoreAdminSuite)
    assert PREFIX_TEST in admin
    assert "test_delete_run_of_unknown_id_is_a_noop" in admin
    assert not admin & _suite_tests(StateStoreSuite)


@pytest.mark.parametrize("store", sorted(BROKEN))
def test_suite_fails_against_a_broken_store(outcomes: Outcomes, store: str) -> None:
    got = outcomes.of(f"Test{store}")
    assert got == dict.fromkeys(BROKEN[store], "failed")
    for test in BROKEN[store]:
        assert "AssertionError" in outcomes.reason(f"Test{store}", test)


def test_suite_failures_explain_themselves(outcomes: Outcomes) -> None:
    reason = outcomes.reason("TestLifoBufferStore", "test_take_buffered_signal_is_fifo_per_token")
    assert "[8, 7, 5, 4, 2, 1] == [1, 2, 4, 5, 7, 8]" in reason


def test_declared_gaps_run_as_strict_xfail_with_their_reason(outcomes: Outcomes) -> None:
    got = outcomes.of("TestDeclaredGap")
    assert got == {
        PREFIX_TEST: "xfailed",
        "test_take_signal_waiter_returns_and_deletes_waiter": "passed",
    }
    assert "acme#7: LIKE wildcards" in outcomes.reason("TestDeclaredGap", PREFIX_TEST)


def test_a_fixed_gap_fails_the_run(outcomes: Outcomes) -> None:
    assert outcomes.of("TestFixedGap") == {"test_year_9999_roundtrip": "failed"}
    assert "XPASS(strict)" in outcomes.reason("TestFixedGap", "test_year_9999_roundtrip")


def test_race_repeats_zero_skips_races_before_opening_the_store(outcomes: Outcomes) -> None:
    got = outcomes.of("TestSkipsBeforeOpeningStore")
    assert {name for name, outcome in got.items() if outcome == "skipped"} == RACE_TESTS
    assert len(RACE_TESTS) >= 10
    for name in RACE_TESTS:
        reason = outcomes.reason("TestSkipsBeforeOpeningStore", name)
        assert "needs SuiteOptions.race_repeats (it is 0" in reason
    assert got["test_year_9999_roundtrip"] == "error"


def test_a_missing_durable_store_fixture_says_how_to_fix_it(outcomes: Outcomes) -> None:
    assert outcomes.of("TestForgotTheFixture") == {"test_year_9999_roundtrip": "error"}
    reason = outcomes.reason("TestForgotTheFixture", "test_year_9999_roundtrip")
    assert "TestForgotTheFixture must override the durable_store fixture" in reason


def test_an_unknown_expected_failure_is_a_collection_error(outcomes: Outcomes) -> None:
    (error,) = [e for nodeid, e in outcomes.collection_errors.items() if "unknown_gap" in nodeid]
    assert "'test_yaer_9999_roundtrip' is not a test of TestTypo" in error
    assert "did you mean 'test_year_9999_roundtrip'" in error


def test_expected_failures_need_a_reason() -> None:
    with pytest.raises(ValueError, match="needs a reason"):

        class TestBlank(StateStoreSuite):
            expected_failures: ClassVar[dict[str, str]] = {"test_year_9999_roundtrip": " "}


def test_options_must_be_suite_options() -> None:
    with pytest.raises(TypeError, match="must be a SuiteOptions instance"):

        class TestLoose(StateStoreSuite):
            options: ClassVar[object] = {"concurrency": 5}  # type: ignore[assignment]


def test_suite_options_default_to_the_strict_values() -> None:
    assert SuiteOptions() == SuiteOptions(concurrency=50, race_repeats=20)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurency": 5},
        {"concurrency": 1},
        {"concurrency": "50"},
        {"race_repeats": -1},
        {"race_repeats": True},
    ],
)
def test_suite_options_reject_unknown_and_invalid_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        SuiteOptions(**kwargs)  # type: ignore[arg-type]


def test_suite_options_are_frozen() -> None:
    options = SuiteOptions()
    with pytest.raises(pydantic.ValidationError):
        options.concurrency = 2  # type: ignore[misc]


def test_needs_rejects_an_unknown_option_at_decoration_time() -> None:
    with pytest.raises(ValueError, match="SuiteOptions has no such option"):
        needs("cross_proces")


def test_public_names_are_exported_sorted() -> None:
    assert durable.conformance.__all__ == sorted(durable.conformance.__all__)
    public = {"StateStoreAdminSuite", "StateStoreSuite", "SuiteOptions", "needs"}
    assert public <= set(durable.conformance.__all__)
