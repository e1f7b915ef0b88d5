"""A published model folder as Loupe's own architectures read and write it: safetensors (one file or
an index of shards), the tokenizer, config.json; none of the folder's code (`auto_map`) is ever run.
"""

import json
from pathlib import Path
from typing import Any

import torch


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of model.safetensors, or of the shards model.safetensors.index.json names
    (the single file first, as transformers looks)."""
    from safetensors.torch import load_file

    path = Path(path)
    if (path / "model.safetensors").is_file():
        return load_file(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{path} holds neither model.safetensors nor model.safetensors.index.json")
    weights: dict[str, torch.Tensor] = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        weights.update(load_file(path / shard))
    return weights


def load_tokenizer(path: Path) -> Any:
    """The folder's tokenizer (None without tokenizer files), by the class its tokenizer_config
    names; tokenizer.json as a fast tokenizer where that is remote code (auto_map) or unknown.
    Never AutoTokenizer: it would read config.json and ask to run the model's auto_map."""
    from transformers import PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    path = Path(path)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        return None
    settings = path / "tokenizer_config.json"
    named = json.loads(settings.read_text()) if settings.is_file() else {}
    cls = None if "auto_map" in named or not named.get("tokenizer_class") else tokenizer_class_from_name(named["tokenizer_class"])
    cls = cls or PreTrainedTokenizerFast
    try:
        # BOS prepended, as TransformerLens makes every bridge's tokenizer; asked here, so that it
        # does not remake this one through AutoTokenizer, which would read config.json's auto_map
        return cls.from_pretrained(path, add_bos_token=True)
    except ValueError:  # a post-processor that cannot prepend BOS: the bridge prepends it instead
        tokenizer = cls.from_pretrained(path)
        tokenizer.init_kwargs["add_bos_token"] = True  # stops the bridge's remake (see above)
        return tokenizer


def write_folder(path: Path, config: dict, weights: dict[str, torch.Tensor], tokenizer: Any = None) -> Path:
    """Write a published folder under `path`: config.json (laid out as transformers writes it),
    model.safetensors (the tensors as named, each copied so tied ones are stored apart), and the
    tokenizer's files if given. Returns `path`."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tensors = {name: tensor.detach().cpu().clone().contiguous() for name, tensor in weights.items()}
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def bridge(model: Any, architecture: str, path: Path, device: str = "cpu") -> Any:
    """A TransformerBridge, by TransformerLens' adapter registered as `architecture`, around `model`
    loaded from the folder at `path`, with the folder's tokenizer (load_tokenizer)."""
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

    return build_bridge_from_module(
        model, architecture, hf_config=model.config, tokenizer=load_tokenizer(path), device=device, model_name=Path(path).name
    )
