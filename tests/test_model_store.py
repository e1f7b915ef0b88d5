"""The model store: discovery from LOUPE_MODEL_DIRS and the zoo, real loading, LRU, revisions."""

import shutil
from pathlib import Path

import pytest

from loupe.config import Settings
from loupe.errors import UnknownModel
from loupe.model_store import ModelStore, discover, revision_of

from .conftest import TINY
from .tiny_models import build_tiny_gpt2

SHIPPED = Path(__file__).resolve().parents[1] / "models"


def test_local_dirs_become_local_ids(model_dir, tmp_path):
    (model_dir / "not_a_model").mkdir(exist_ok=True)
    entries = discover(Settings(model_dirs=[model_dir], zoo_dir=tmp_path / "none"))
    assert list(entries) == [TINY]
    assert entries[TINY].source == "local" and entries[TINY].n_layers == 2 and entries[TINY].n_ctx == 128


def test_zoo_ids_are_folder_names(model_dir, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(model_dir / "gpt2tiny", zoo / "tiny-zoo")
    (zoo / "tiny-zoo" / "loupe.json").write_text('{"description": "a test zoo model"}')
    entries = discover(Settings(zoo_dir=zoo))
    assert entries["tiny-zoo"].source == "zoo" and entries["tiny-zoo"].description == "a test zoo model"


def test_loads_through_transformer_bridge(tiny_model):
    assert type(tiny_model.bridge).__name__ == "TransformerBridge"
    assert tiny_model.pattern_hook_names() == {0: "blocks.0.attn.hook_pattern", 1: "blocks.1.attn.hook_pattern"}


def test_only_listed_ids_load(model_dir, tmp_path):
    store = ModelStore(Settings(model_dirs=[model_dir], zoo_dir=tmp_path / "none"))
    for bad in ("gpt2tiny", "local/../gpt2tiny", str(model_dir / "gpt2tiny"), "gpt2"):
        with pytest.raises(UnknownModel):
            store.get(bad)


def test_lru_keeps_at_most_max_loaded_models(tmp_path):
    for name in ("a", "b", "c"):
        build_tiny_gpt2(tmp_path / "dirs" / name, n_layer=1)
    store = ModelStore(Settings(model_dirs=[tmp_path / "dirs"], zoo_dir=tmp_path / "none", max_loaded_models=2))
    first = store.get("local/a")
    store.get("local/b")
    assert store.get("local/a") is first  # cached, and now most recent
    store.get("local/c")
    assert set(store._loaded) == {"local/a", "local/c"}  # b was least recently used


def test_revision_changes_with_the_weights(tmp_path):
    path = build_tiny_gpt2(tmp_path / "m", n_layer=1, seed=0)
    entry = discover(Settings(model_dirs=[tmp_path], zoo_dir=tmp_path / "none"))["local/m"]
    before = revision_of(entry)
    assert revision_of(entry) == before
    build_tiny_gpt2(path, n_layer=1, seed=1)
    assert revision_of(entry) != before


def test_a_model_with_training_data_changes_revision_with_its_training_code(tmp_path):
    """data_attribution regenerates the training rows with the zoo's script and data: an edit there,
    even one keeping the file's size, must not answer from the old ranking."""
    zoo = tmp_path / "models"
    shutil.copytree(SHIPPED, zoo, ignore=shutil.ignore_patterns("induction-2l", "looped-*", "retrieval-2l", "__pycache__"))
    entry = discover(Settings(model_dirs=[], zoo_dir=zoo))["induction-scratch"]
    assert entry.training_data is not None
    before = revision_of(entry)
    script = zoo / "train_induction_scratch.py"
    source = script.read_text()
    script.write_text(source.replace("def batch(", "def bAtch(", 1))  # same size, another program
    assert revision_of(entry) != before
    script.write_text(source)
    assert revision_of(entry) == before


def test_remote_code_is_off_by_default():
    assert Settings().trust_remote_code is False


def test_a_folder_added_to_model_dirs_is_listed_without_a_restart(tmp_path, model_dir):
    import shutil

    from loupe.config import Settings
    from loupe.model_store import ModelStore

    root = tmp_path / "dirs"
    root.mkdir()
    store = ModelStore(Settings(model_dirs=[root], zoo_dir=tmp_path / "zoo"))
    assert store.entries() == {}
    shutil.copytree(model_dir / "gpt2tiny", root / "added")
    assert list(store.entries()) == ["local/added"]
    assert store.entries() is store.entries()  # unchanged folders: not rediscovered


def test_two_models_booting_at_once_both_load(tmp_path):
    """Boots are serialised: transformers' meta-device initialisation is process-wide, and two models
    loading in two threads at once left one with meta tensors (seen when a page's token count loaded
    one model while a job loaded another)."""
    import threading

    from loupe.config import Settings
    from loupe.model_store import ModelStore

    from .tiny_models import build_tiny_gpt2, build_tiny_llama

    build_tiny_gpt2(tmp_path / "dirs" / "a")
    build_tiny_llama(tmp_path / "dirs" / "b")
    store = ModelStore(Settings(model_dirs=[tmp_path / "dirs"], zoo_dir=tmp_path / "zoo", data_dir=tmp_path / "data"))
    errors: list[Exception] = []

    def load(model_id: str) -> None:
        try:
            store.get(model_id)
        except Exception as exc:  # collected: a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(f"local/{name}",)) for name in ("a", "b", "a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {"local/a", "local/b"} <= set(store._loaded)
