"""Every test here runs on both backends: a temp SQLite file and a new database on the session's PostgreSQL."""

import pytest

from loupe.db.engine import make_engine


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """The URL of a new, empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'loupe.db'}"
        return
    with request.getfixturevalue("postgres").database() as url:
        yield url


@pytest.fixture
def engines(database_url):
    """engines() -> a new engine on the test's database (its own pool: as another process would
    connect), disposed at the end."""
    made = []

    def make():
        made.append(make_engine(database_url))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()
