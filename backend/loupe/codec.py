"""Compact storage of attention patterns: 16-bit fixed point, causal lower triangle, byte-shuffled zlib.

Attention probabilities lie in [0, 1], so a uniform 16-bit grid (step 1/65535) bounds the absolute
error by 7.7e-6 everywhere, which float16 does not (its error near 1.0 is 2.4e-4). A causal head
never attends forward, so only the lower triangle (query_pos >= key_pos) is kept. Splitting each
uint16 into its high-byte and low-byte planes before zlib lets the mostly-zero high bytes compress;
zlib's run-length strategy (Z_RLE) matches the planes' redundancy (runs of zeros and of repeated
high bytes): smaller than the default strategy and twice as fast, and still a plain zlib stream,
which the page inflates itself (`format=stored`, DecompressionStream "deflate").

`PatternStore` quantizes each layer's patterns while the forward pass still holds them, so an
analysis never keeps float patterns: at T = 1024 on GPT-2 small it holds 151 MB of triangles
instead of 604 MB of float32 (bench/RESULTS.md).
"""

import functools
import zlib
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .db.cache import BlobData

SCALE = 65535
TRIANGLE = "tri-u16-zlib"
FULL = "full-u16-zlib"
THUMBNAIL = "u8-zlib"
THUMBNAIL_SIZE = 32


def _compress(data: np.ndarray) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    return compressor.compress(np.ascontiguousarray(data)) + compressor.flush()


def _pack_quantized(quantized: np.ndarray) -> bytes:
    """zlib of the byte planes (all low bytes, then all high bytes) of uint16 values."""
    planes = quantized.astype("<u2", copy=False).reshape(-1).view(np.uint8).reshape(-1, 2).T  # [2, n]
    return _compress(planes)


def _unpack(data: bytes, count: int) -> np.ndarray:
    planes = np.frombuffer(zlib.decompress(data), dtype=np.uint8).reshape(2, count)
    return np.ascontiguousarray(planes.T).view("<u2").reshape(count).astype(np.float32) / SCALE


@functools.lru_cache(maxsize=4)
def _triangle(n: int) -> torch.Tensor:
    """Flat indices into an n x n matrix of its lower triangle, row-major (as np.tril_indices)."""
    return torch.ones(n, n, dtype=torch.bool).tril().reshape(-1).nonzero().squeeze(1)


def _stored_form(probs: torch.Tensor, scratch: torch.Tensor) -> tuple[str, torch.Tensor]:
    """(codec, uint16 values [head, n]) of patterns [head, query_pos, key_pos] in [0, 1]: fixed
    point, the lower triangle only when no head has a nonzero value above the diagonal. `scratch`
    (float32, same shape) is overwritten."""
    n_heads, n_query, n_key = probs.shape

    def quantize() -> torch.Tensor:
        return torch.mul(probs, SCALE, out=scratch).clamp_(0, SCALE).round_()  # whole numbers 0..SCALE

    quantized = quantize()
    if n_query == n_key:
        lower = torch.index_select(quantized.view(n_heads, -1), 1, _triangle(n_query)).to(torch.uint16)
        if quantized.triu_(1).amax() == 0:  # values are >= 0: nothing above the diagonal
            return TRIANGLE, lower
        quantized = quantize()  # triu_ cleared the rest
    return FULL, quantized.view(n_heads, -1).to(torch.uint16)


def encode_pattern(pattern: torch.Tensor) -> tuple[str, bytes]:
    """(codec, bytes) for one head's pattern [query_pos, key_pos]."""
    probs = pattern.detach().float().cpu()[None]
    codec, values = _stored_form(probs, torch.empty_like(probs))
    return codec, _pack_quantized(values[0].numpy().view(np.uint16))


def decode_pattern(codec: str, data: bytes, shape: list[int]) -> np.ndarray:
    """float32 [query_pos, key_pos] from what encode_pattern returned."""
    n_query, n_key = shape
    if codec == TRIANGLE:
        lower = _triangle(n_query)
        out = np.zeros(n_query * n_key, dtype=np.float32)
        out[lower.numpy()] = _unpack(data, len(lower))
        return out.reshape(n_query, n_key)
    if codec == FULL:
        return _unpack(data, n_query * n_key).reshape(n_query, n_key)
    raise ValueError(f"unknown codec {codec!r}")


def _max_pool(probs: torch.Tensor, size: int = THUMBNAIL_SIZE) -> torch.Tensor:
    """[head, s, s] max-pooled previews of patterns [head, query_pos, key_pos], s = min(size, T)."""
    n_heads, n_query, n_key = probs.shape
    side = min(size, n_key)
    if n_query % side == 0 and n_key % side == 0:  # equal blocks: a reshape, 5x faster than the adaptive pool
        return probs.reshape(n_heads, side, n_query // side, side, n_key // side).amax((2, 4))
    return torch.nn.functional.adaptive_max_pool2d(probs, side)


def thumbnails(pattern: torch.Tensor, size: int = THUMBNAIL_SIZE) -> tuple[bytes, list[int]]:
    """Max-pooled [layer, head, s, s] uint8 previews of every head, for the overview grid."""
    return _thumbnail_bytes(torch.stack([_max_pool(layer.float(), size) for layer in pattern]))


def _thumbnail_bytes(pooled: torch.Tensor) -> tuple[bytes, list[int]]:
    data = (pooled.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return zlib.compress(data.tobytes(), level=1), list(data.shape)


def decode_thumbnails(data: bytes, shape: list[int]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(data), dtype=np.uint8).reshape(shape)


class PatternStore:
    """Every (iteration, layer)'s patterns [head, query_pos, key_pos], kept in stored form.

    `add` takes one layer's float32 probabilities while the forward pass holds them and keeps
    their quantized lower triangle (the bytes the codec will compress) and max-pooled previews;
    `blobs` compresses them, releasing each layer as it goes. A layer that fired once in a
    multi-iteration pass (outside a retrofit loop) has the same pattern at every iteration.
    """

    def __init__(self) -> None:
        self.values: dict[tuple[int, int], tuple[str, torch.Tensor]] = {}
        self.pooled: dict[tuple[int, int], torch.Tensor] = {}
        self.shape: list[int] = []

    def add(self, iteration: int, layer: int, probs: torch.Tensor, scratch: torch.Tensor) -> None:
        """probs: [head, query_pos, key_pos] float32; scratch: a float32 tensor of the same shape
        that may be overwritten."""
        self.shape = list(probs.shape[-2:])
        self.pooled[iteration, layer] = _max_pool(probs)
        self.values[iteration, layer] = _stored_form(probs, scratch)

    def blobs(self) -> list["BlobData"]:
        """One blob per (iteration, layer, head) and one thumbnail blob per iteration. Each layer's
        values are released once compressed for the last iteration that shows them."""
        from collections import Counter

        from .db.cache import BlobData
        from .loops import by_iteration

        grid = by_iteration({key: key for key in self.values}, 1 + max(layer for _, layer in self.values))
        uses = Counter(key for row in grid for key in row)
        out = []
        for iteration, keys in enumerate(grid):
            for layer, key in enumerate(keys):
                uses[key] -= 1
                codec, values = self.values.pop(key) if uses[key] == 0 else self.values[key]
                array = values.numpy().view(np.uint16)  # [head, n]
                for head in range(array.shape[0]):
                    out.append(BlobData("pattern", iteration, layer, head, codec, self.shape, _pack_quantized(array[head])))
            data, shape = _thumbnail_bytes(torch.stack([self.pooled[key] for key in keys]))  # [layer, head, s, s]
            out.append(BlobData("thumbnail", iteration, -1, -1, THUMBNAIL, shape, data))
        return out


def pattern_blobs(patterns: torch.Tensor) -> list["BlobData"]:
    """The blobs of patterns [iteration, layer, head, query_pos, key_pos] (float): as PatternStore."""
    store = PatternStore()
    n_iterations, n_layers = patterns.shape[:2]
    for iteration in range(n_iterations):
        for layer in range(n_layers):
            probs = patterns[iteration, layer].float()
            store.add(iteration, layer, probs, torch.empty_like(probs))
    return store.blobs()
