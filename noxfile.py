"""Every check a contributor must pass: plain ``nox`` runs all of them but ``bench``."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "typecheck-tools",
    "tests",
    "conformance",
    "example",
    "lowest",
]

ROOT = Path(__file__).parent
DISTS = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").exists())
STORES = {
    "memory": ["memory"],
    "sqlalchemy": ["sqlite", "postgres", "postgres-psycopg", "mariadb"],
}
TRANSPORTS = {"inprocess": ["memory"]}  # the medium each bundled transport's suite runs on
CELLS = [
    nox.param(wiring, db, id=f"{wiring}-{db}", tags=["conformance", wiring, db.split("-")[0]])
    for wiring, dbs in (STORES | TRANSPORTS).items()
    for db in dbs
]
NAMESPACE_DIRS = ["durable", "durable/stores", "durable/transports"]


def sync(session: nox.Session, *groups: str) -> None:
    """Install the locked workspace (every package, the given groups) into the session venv."""
    args = ["uv", "sync", "--locked", "--all-packages", "--inexact"]
    for group in groups:
        args += ["--group", group]
    session.run_install(*args, env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location})


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check; PEP 420 namespace directories stay without __init__.py."""
    sync(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    strays = [
        str(init.relative_to(ROOT))
        for dist in (ROOT / "packages").iterdir()
        for ns in NAMESPACE_DIRS
        if (init := dist / "src" / ns / "__init__.py").exists()
    ]
    if strays:
        session.error(f"namespace packages must not have __init__.py: {', '.join(strays)}")


@nox.session
@nox.parametrize("dist", DISTS, ids=DISTS)
def typecheck(session: nox.Session, dist: str) -> None:
    """Mypy --strict over one distribution's sources and tests."""
    sync(session, "dev")
    session.run("mypy", f"packages/{dist}/src", f"packages/{dist}/tests")


@nox.session(name="typecheck-tools")
def typecheck_tools(session: nox.Session) -> None:
    """Mypy --strict over the code outside the distributions: benchmarks, cells, this file."""
    sync(session, "dev", "bench")
    session.run("mypy", "benchmarks", "tests_conformance", "noxfile.py")


@nox.session
@nox.parametrize("dist", DISTS, ids=DISTS)
def tests(session: nox.Session, dist: str) -> None:
    """The unit tests of one distribution."""
    sync(session, "dev")
    session.run("pytest", f"packages/{dist}/tests", *session.posargs)


@nox.session
@nox.parametrize("wiring,db", CELLS)
def conformance(session: nox.Session, wiring: str, db: str) -> None:
    """The conformance suites against one bundled store or transport on one database/medium."""
    sync(session, "dev")
    session.run(
        "pytest", f"tests_conformance/test_{wiring}.py", f"--durable-db={db}", *session.posargs
    )


@nox.session
def example(session: nox.Session) -> None:
    """Run the README example twice on one embedded SQLite file (no server needed).

    The second run finds the first run's checkout in the database file and adds its own.
    """
    sync(session, "dev")
    database = Path(session.create_tmp()) / "checkout.db"
    database.unlink(missing_ok=True)
    for _ in range(2):
        session.run("python", "docs/examples/checkout.py", str(database), *session.posargs)


@nox.session
def lowest(session: nox.Session) -> None:
    """The tests on the lowest versions our dependency floors allow (``lowest-direct``).

    Proves the floors in each pyproject.toml are real: the core and transport unit tests, then
    the conformance suites on the in-memory store, on SQLite (which exercise the store) and on
    the in-process transport.
    """
    session.install(
        "--resolution",
        "lowest-direct",
        *(f"-e./packages/{dist}" for dist in DISTS if dist != "durable-store-sqlalchemy"),
        "-e./packages/durable-store-sqlalchemy[sqlite]",
        "pytest>=8.3",
    )
    session.run(
        "pytest", *(f"packages/{d}/tests" for d in ("durable-core", "durable-transport-inprocess"))
    )
    session.run("pytest", "tests_conformance/test_memory.py")
    session.run("pytest", "tests_conformance/test_sqlalchemy.py", "--durable-db=sqlite")
    session.run("pytest", "tests_conformance/test_inprocess.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with DBOS: ``nox -s bench -- --db sqlite --size small``."""
    sync(session, "dev", "bench")
    session.run("python", "-m", "benchmarks", *session.posargs)
