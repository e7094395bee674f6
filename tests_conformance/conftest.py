"""Options shared by the conformance wirings of the bundled stores."""

from __future__ import annotations

import pytest

DATABASES = ("memory", "sqlite", "postgres", "postgres-psycopg", "mariadb")
"""``postgres`` runs on asyncpg, ``postgres-psycopg`` on the same server through psycopg 3."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--durable-db",
        choices=DATABASES,
        default="memory",
        help="the database the bundled stores run the conformance suites on (default: memory)",
    )


@pytest.fixture(scope="session")
def durable_db(pytestconfig: pytest.Config) -> str:
    db: str = pytestconfig.getoption("--durable-db")
    return db
