"""Hub names: a looped model allow-listed by its hub name (LOUPE_HUB_MODELS) loads from the local
Hugging Face cache, as its hub snapshot lays it out, with Loupe's own classes and no network."""

import shutil

import huggingface_hub
import pytest

from loupe.architectures import ouro
from loupe.config import Settings
from loupe.model_store import ModelStore

from ..tiny_models import _tokenizer

NAME = "ByteDance/Ouro-1.4B"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A local HF cache holding a tiny Ouro under NAME at COMMIT (refs/main -> snapshots/COMMIT)."""
    cache = tmp_path / "hub"
    repo = cache / f"models--{NAME.replace('/', '--')}"
    folder = ouro.save_published(ouro.tiny(0, n_iterations=3), tmp_path / "built", _tokenizer())
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_a_hub_name_loads_natively_from_the_cache(hub_cache, tmp_path):
    store = ModelStore(Settings(hub_models=[NAME], zoo_dir=tmp_path / "zoo", data_dir=tmp_path / "data"))
    entry = store.entry(NAME)
    assert (entry.source, entry.n_iterations, entry.loupe["revision"]) == ("hub", 3, COMMIT)
    assert "exit_gate" in entry.capabilities and not entry.remote_code
    model = store.get(NAME)  # trust_remote_code is off: Loupe's classes read the snapshot
    assert type(model.bridge.original_model) is ouro.OuroForCausalLM
    assert store.revision(NAME) == COMMIT
