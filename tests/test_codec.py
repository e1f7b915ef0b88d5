"""Pattern storage: lossless to 1e-5, lower triangle only for causal heads, compact."""

import numpy as np
import pytest
import torch

from loupe.codec import FULL, TRIANGLE, PatternStore, decode_pattern, decode_thumbnails, encode_pattern


def _causal(T: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    scores = torch.randn(T, T).masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return torch.softmax(scores * 3, dim=-1)


def test_causal_roundtrip_uses_triangle_and_bounds_error():
    pattern = _causal(64)
    codec, data = encode_pattern(pattern)
    assert codec == TRIANGLE
    decoded = decode_pattern(codec, data, [64, 64])
    assert np.abs(decoded - pattern.numpy()).max() <= 1e-5
    assert (np.triu(decoded, 1) == 0).all()


def test_non_causal_roundtrip_keeps_everything():
    pattern = torch.softmax(torch.randn(5, 7), dim=-1)
    codec, data = encode_pattern(pattern)
    assert codec == FULL
    assert np.abs(decode_pattern(codec, data, [5, 7]) - pattern.numpy()).max() <= 1e-5


def test_stored_size_is_below_half_of_fp16():
    pattern = _causal(512)
    _, data = encode_pattern(pattern)
    assert len(data) < 0.5 * 512 * 512 * 2


def test_blobs_cover_every_head_and_iteration():
    patterns = torch.stack([_causal(8, seed) for seed in range(2 * 3 * 4)]).reshape(2, 3, 4, 8, 8)
    store = PatternStore()
    for iteration in range(2):
        for layer in range(3):
            store.add(iteration, layer, patterns[iteration, layer])
    blobs = store.slices()
    heads = {(b.iteration, b.layer, b.head) for b in blobs if b.name == "pattern"}
    assert heads == {(i, l, h) for i in range(2) for l in range(3) for h in range(4)}
    assert sum(b.name == "thumbnail" for b in blobs) == 2
    for b in blobs:
        if b.name == "pattern":
            expected = patterns[b.iteration, b.layer, b.head].numpy()
            assert np.abs(decode_pattern(b.codec, b.data, b.shape) - expected).max() <= 1e-5


def test_a_layer_that_fired_once_shows_at_every_iteration():
    """Outside a retrofit loop a layer fires once; its pattern holds at every iteration."""
    store = PatternStore()
    once, looped = _causal(8, 0)[None], [_causal(8, seed)[None] for seed in (1, 2)]
    store.add(0, 0, once)
    for iteration, pattern in enumerate(looped):
        store.add(iteration, 1, pattern)
    blobs = {(b.iteration, b.layer): b for b in store.slices() if b.name == "pattern"}
    assert set(blobs) == {(0, 0), (1, 0), (0, 1), (1, 1)}
    assert blobs[0, 0].data == blobs[1, 0].data != blobs[1, 1].data


def test_thumbnails_are_max_pooled_previews():
    pattern = torch.zeros(1, 64, 64)  # [head, query_pos, key_pos]
    pattern[0, 40, 3] = 1.0
    store = PatternStore()
    store.add(0, 0, pattern)
    (blob,) = [b for b in store.slices() if b.name == "thumbnail"]
    data, shape = blob.data, blob.shape
    preview = decode_thumbnails(data, shape)
    assert shape == [1, 1, 32, 32]
    assert preview[0, 0, 20, 1] == 255 and preview.sum() == 255


def test_unknown_codec_is_an_error():
    with pytest.raises(ValueError):
        decode_pattern("nope", b"", [1, 1])
