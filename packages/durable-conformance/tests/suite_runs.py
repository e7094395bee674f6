"""Running suites the way a third party runs them, and reading what happened.

The suite self-tests write generated test modules (each subclassing a suite) into a scratch
directory and run them with one in-process ``pytest.main``, recording every report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).parent

INI = """\
[pytest]
addopts = --import-mode=importlib --strict-markers --strict-config -p no:cacheprovider
xfail_strict = false
filterwarnings = error
pythonpath = {here}
"""

TRIO = """
    @pytest.fixture
    def anyio_backend(self):
        return "trio"
"""
"""Lines to add to a generated suite class to run it on trio."""


@dataclass
class Outcomes:
    """What the in-process pytest run reported, keyed by node id."""

    tests: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    collection_errors: dict[str, str] = field(default_factory=dict)

    def of(self, cls: str) -> dict[str, str]:
        """Outcome per test name of one generated class."""
        marker = f"::{cls}::"
        return {
            nodeid.partition(marker)[2]: outcome
            for nodeid, outcome in self.tests.items()
            if marker in nodeid
        }

    def reason(self, cls: str, test: str) -> str:
        return next(r for n, r in self.reasons.items() if n.endswith(f"::{cls}::{test}"))


class Recorder:
    """A pytest plugin object collecting the reports of the inner run."""

    def __init__(self) -> None:
        self.outcomes = Outcomes()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        tests, nodeid = self.outcomes.tests, report.nodeid
        if report.failed:
            tests[nodeid] = "failed" if report.when == "call" else "error"
            self.outcomes.reasons[nodeid] = str(report.longrepr)
        elif report.skipped and tests.get(nodeid) not in ("failed", "error"):
            xfailed = hasattr(report, "wasxfail")
            tests[nodeid] = "xfailed" if xfailed else "skipped"
            reason = report.wasxfail if xfailed else str(report.longrepr)
            self.outcomes.reasons[nodeid] = reason
        elif report.when == "call" and nodeid not in tests:
            tests[nodeid] = "passed"

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.outcomes.collection_errors[report.nodeid] = str(report.longrepr)


def run(root: Path, files: dict[str, str], selected: list[str]) -> Outcomes:
    """Write ``files`` and a pytest.ini into ``root``, run the ``selected`` node ids there."""
    (root / "pytest.ini").write_text(INI.format(here=HERE))
    for name, source in files.items():
        (root / name).write_text(source)
    recorder = Recorder()
    options = ["-c", str(root / "pytest.ini"), "--rootdir", str(root), "-q"]
    options += ["-p", "no:faulthandler", "--continue-on-collection-errors"]
    pytest.main([*selected, *options], plugins=[recorder])
    return recorder.outcomes
