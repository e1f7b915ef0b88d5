"""Shared fixtures: tiny real models in LOUPE_MODEL_DIRS, a temp SQLite data dir (or, with
LOUPE_TEST_DATABASE=postgres, a database of its own on a throwaway PostgreSQL), an app client."""

import os

import pytest
from fastapi.testclient import TestClient

from loupe.config import Settings
from loupe.main import create_app
from loupe.model_store import ModelStore

from .tiny_looped import build_tiny_looped
from .tiny_models import build_tiny_gpt2

TINY = "local/gpt2tiny"
LOOPED = "local/loopedtiny"
DATABASE = os.environ.get("LOUPE_TEST_DATABASE", "sqlite")  # where the apps under test store results: sqlite | postgres
if DATABASE not in ("sqlite", "postgres"):
    raise pytest.UsageError(f"LOUPE_TEST_DATABASE is sqlite or postgres, not {DATABASE!r}")


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster for the whole session (tests/services/postgres.py)."""
    from .services.postgres import postgres_cluster

    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def fresh_database(request):
    """fresh_database(data_dir) -> the URL of a new, empty database for an app: Loupe's default
    SQLite file in `data_dir`, or a new database on the session's PostgreSQL."""
    if DATABASE == "sqlite":
        return lambda data_dir: f"sqlite:///{(data_dir / 'loupe.db').resolve()}"
    cluster = request.getfixturevalue("postgres")
    return lambda _data_dir: cluster.create_database()


@pytest.fixture(autouse=True)
def _app_database(request, monkeypatch):
    """With LOUPE_TEST_DATABASE=postgres, every app a test builds (Settings read LOUPE_DATABASE_URL)
    uses a new PostgreSQL database, dropped afterwards: as isolated as a temp SQLite file."""
    if DATABASE == "sqlite":
        yield
        return
    with request.getfixturevalue("postgres").database() as url:
        monkeypatch.setenv("LOUPE_DATABASE_URL", url)
        yield


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A LOUPE_MODEL_DIRS folder holding `gpt2tiny`, a 2-layer 4-head random-init GPT-2."""
    root = tmp_path_factory.mktemp("model_dirs")
    build_tiny_gpt2(root / "gpt2tiny")
    return root


@pytest.fixture
def settings(tmp_path, model_dir) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_dirs=[model_dir], zoo_dir=tmp_path / "empty_zoo", sync_wait_s=30)


@pytest.fixture(scope="session")
def tiny_model(model_dir, tmp_path_factory):
    """The loaded tiny model, shared by analysis tests (loading is the slow part)."""
    settings = Settings(model_dirs=[model_dir], zoo_dir=tmp_path_factory.mktemp("zoo"))
    return ModelStore(settings).get(TINY)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def looped_model_dir(tmp_path_factory):
    """A LOUPE_MODEL_DIRS folder holding `loopedtiny`: 2 weight-shared Llama blocks run 3 times."""
    root = tmp_path_factory.mktemp("looped_dirs")
    build_tiny_looped(root / "loopedtiny")
    return root


@pytest.fixture(scope="session")
def looped_model(looped_model_dir, tmp_path_factory):
    """The loaded tiny looped model, through Loupe's ModelStore (loupe.json `loader: looped`)."""
    settings = Settings(model_dirs=[looped_model_dir], zoo_dir=tmp_path_factory.mktemp("zoo"))
    return ModelStore(settings).get(LOOPED)


@pytest.fixture
def client_over(tmp_path):
    """client_over(*model_dirs) -> an app client over those LOUPE_MODEL_DIRS, a temp SQLite and an
    empty zoo (closed at the end of the test)."""
    from contextlib import ExitStack

    with ExitStack() as stack:

        def make(*model_dirs):
            settings = Settings(data_dir=tmp_path / "data", model_dirs=list(model_dirs), zoo_dir=tmp_path / "zoo", sync_wait_s=30)
            return stack.enter_context(TestClient(create_app(settings)))

        yield make


def refused(response, code: str) -> str:
    """The message of a 422 refusal with `code`, in the one error shape."""
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"error", "code", "status"} and body["code"] == code and body["status"] == 422
    return body["error"]


@pytest.fixture(scope="session")
def loupe_server(model_dir, tmp_path_factory, fresh_database):
    """`python -m loupe` on a free port over `model_dir` (`local/gpt2tiny`, the default model), an
    empty zoo and an empty data dir (and database) of its own."""
    from .server import running_server

    root = tmp_path_factory.mktemp("loupe_server")
    (root / "zoo").mkdir()
    env = {
        "LOUPE_DATA_DIR": str(root / "data"), "LOUPE_MODEL_DIRS": str(model_dir), "LOUPE_ZOO_DIR": str(root / "zoo"),
        "LOUPE_DEFAULT_MODEL": TINY, "LOUPE_HUB_MODELS": "", "LOUPE_API_TOKEN": "",
        "LOUPE_DATABASE_URL": fresh_database(root / "data"),
    }
    with running_server(env, root / "server.log") as server:
        yield server
