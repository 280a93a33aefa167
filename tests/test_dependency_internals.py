"""What the code relies on inside other libraries (chathistory._internals) is still there, and
every such dependency is bounded above in pyproject.toml: a release that changes an internal
fails here, naming the dependency and its version, instead of slowing or breaking quietly."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from chathistory import ChatHistory
from chathistory._internals import INTERNALS, Internal

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"


@pytest.mark.parametrize(
    "internal", INTERNALS, ids=lambda i: f"{i.dependency}-{i.check.__name__.strip('_')}"
)
def test_an_internal_still_has_the_shape_relied_on(internal: Internal) -> None:
    try:
        internal.check()
    except Exception as exc:
        pytest.fail(
            f"{internal.dependency} {internal.installed()} changed what chathistory relies on: "
            f"{internal.internal}, used in {internal.used_in} ({internal.why}): "
            f"{type(exc).__name__}: {exc}. Adapt the code, then move the upper bound of "
            f"{internal.dependency} in pyproject.toml.",
            pytrace=False,
        )


def _requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    given = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        given += extra
    return [Requirement(text) for text in given]


def test_every_dependency_relied_on_inside_is_bounded_above() -> None:
    requirements = _requirements()
    for dependency in sorted({internal.dependency for internal in INTERNALS}):
        found = [r for r in requirements if r.name.lower() == dependency]
        assert found, f"{dependency} is not a dependency in pyproject.toml"
        for requirement in found:
            bounded = any(s.operator in ("<", "==", "~=") for s in requirement.specifier)
            assert bounded, f"pyproject.toml: {requirement} has no upper bound"
        installed = next(i.installed() for i in INTERNALS if i.dependency == dependency)
        if installed is None:
            continue
        for requirement in found:
            assert requirement.specifier.contains(Version(installed), prereleases=True), (
                f"{dependency} {installed} is installed, outside {requirement} (pyproject.toml)"
            )


@pytest.fixture
def pg_url(make_pg_database: Callable[[str], str]) -> str:
    return make_pg_database("chathistory_internals_tests")


async def test_the_pools_fast_path_is_taken(pg_url: str) -> None:
    """The borrow that skips SQLAlchemy's checkout falls back to it quietly on anything
    unexpected: on an idle, live connection it must take the fast path."""
    import sqlalchemy

    url = pg_url
    async with ChatHistory.open(url) as store:
        database = store._db
        async with database.driver() as connection:  # the pool's first connection
            await connection.fetchval("SELECT 1")
        borrowed = database.driver()
        async with borrowed as connection:
            assert await connection.fetchval("SELECT 2") == 2
        assert borrowed._record is not None, (
            f"sqlalchemy {sqlalchemy.__version__}: the pool's fast path (chathistory.store."
            "database._take) no longer applies to an idle connection; see "
            "chathistory._internals"
        )
