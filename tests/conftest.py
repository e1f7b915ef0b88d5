"""Shared fixtures: tiny real models in LOUPE_MODEL_DIRS, a temp SQLite data dir, an app client."""

import pytest
from fastapi.testclient import TestClient

from loupe.config import Settings
from loupe.main import create_app
from loupe.model_store import ModelStore

from .tiny_looped import build_tiny_looped
from .tiny_models import build_tiny_gpt2

TINY = "local/gpt2tiny"
LOOPED = "local/loopedtiny"


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
def loupe_server(model_dir, tmp_path_factory):
    """`python -m loupe` on a free port over `model_dir` (`local/gpt2tiny`, the default model), an
    empty zoo and an empty data dir of its own."""
    from .server import running_server

    root = tmp_path_factory.mktemp("loupe_server")
    (root / "zoo").mkdir()
    env = {
        "LOUPE_DATA_DIR": str(root / "data"), "LOUPE_MODEL_DIRS": str(model_dir), "LOUPE_ZOO_DIR": str(root / "zoo"),
        "LOUPE_DEFAULT_MODEL": TINY, "LOUPE_HUB_MODELS": "", "LOUPE_API_TOKEN": "",
    }
    with running_server(env, root / "server.log") as server:
        yield server
