"""Compact storage of attention patterns: 16-bit fixed point, causal lower triangle, byte-shuffled zlib.

Attention probabilities lie in [0, 1], so a uniform 16-bit grid (step 1/65535) bounds the absolute
error by 7.7e-6 everywhere, which float16 does not (its error near 1.0 is 2.4e-4). A causal head
never attends forward, so only the lower triangle (query_pos >= key_pos) is kept. Splitting each
uint16 into its high-byte and low-byte planes lets the mostly-zero high bytes compress (zlib's
run-length strategy, Z_RLE, matches their runs); the near-random low bytes are stored as they are
(see _pack_quantized). The result is a plain zlib stream, which the page inflates itself
(`format=stored`, DecompressionStream "deflate").

`PatternStore` quantizes each layer's patterns while the forward pass still holds them, so an
analysis never keeps float patterns: at T = 1024 on GPT-2 small it holds 151 MB of triangles
instead of 604 MB of float32 (bench/RESULTS.md).
"""

import functools
import os
import struct
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .attention_rule import F32, RULE, AttentionRule, Rows, bins
from .loops import by_iteration

if TYPE_CHECKING:
    from .fused import LayerRows

SCALE = 65535
TRIANGLE = "tri-u16-zlib"
FULL = "full-u16-zlib"
THUMBNAIL = "u8-zlib"
THUMBNAIL_SIZE = 32


_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, "fastest" (RFC 1950)
_STORED_BLOCK = 65535  # the most bytes a deflate stored block holds (RFC 1951, 3.2.4)


@dataclass(frozen=True)
class Slice:
    """One encoded tensor slice: e.g. one head's pattern at one iteration (`pattern`), or one
    iteration's thumbnails (`thumbnail`, layer and head -1). The cache stores it as it is."""

    name: str
    iteration: int
    layer: int
    head: int
    codec: str
    shape: list[int]
    data: bytes


def _pack_quantized(quantized: np.ndarray) -> bytes:
    """One zlib stream of the byte planes of uint16 values: all low bytes, then all high bytes.

    The low bytes of attention weights are close to noise: zlib shrinks them by a quarter at two
    thirds of the compression time (0.61 s of 0.89 s for GPT-2 small at T = 1024). So they go in
    deflate's stored blocks, copied as they are, and only the high bytes (mostly zeros) are
    compressed; the stream is still one plain zlib stream, which any inflater reads as before.
    Stored size: 0.27x of fp16 instead of 0.21x (the target is 0.5x)."""
    planes = quantized.astype("<u2", copy=False).reshape(-1).view(np.uint8).reshape(-1, 2).T  # [2, n]
    low, high = np.ascontiguousarray(planes[0]), np.ascontiguousarray(planes[1])
    out = [_ZLIB_HEADER]
    for start in range(0, len(low), _STORED_BLOCK):  # non-final stored blocks, byte-aligned
        block = low[start : start + _STORED_BLOCK]
        out += [struct.pack("<BHH", 0, len(block), 0xFFFF ^ len(block)), block.tobytes()]
    raw = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_RLE)  # raw deflate: ends with the final block
    out += [raw.compress(high), raw.flush(), struct.pack(">I", zlib.adler32(high, zlib.adler32(low)))]
    return b"".join(out)


def _unpack(data: bytes, count: int) -> np.ndarray:
    planes = np.frombuffer(zlib.decompress(data), dtype=np.uint8).reshape(2, count)
    return np.ascontiguousarray(planes.T).view("<u2").reshape(count).astype(np.float32) / SCALE


@functools.lru_cache(maxsize=4)
def _triangle(n: int) -> torch.Tensor:
    """Flat indices into an n x n matrix of its lower triangle, row-major (as np.tril_indices)."""
    return torch.ones(n, n, dtype=torch.bool).tril().reshape(-1).nonzero().squeeze(1)


def _stored_form(probs: torch.Tensor, out: torch.Tensor) -> str:
    """Patterns [head, query_pos, key_pos] in [0, 1] as 16-bit fixed point, written to `out`
    (uint16 [head, >= n]): the lower triangle (n = T(T+1)/2, TRIANGLE) when no head has a
    nonzero value above the diagonal, else everything (n = T*T, FULL). One head at a time, so
    the float temporaries are one matrix, not the layer."""
    n_heads, n_query, n_key = probs.shape
    square = n_query == n_key
    scratch = probs.new_empty((n_query, n_key))
    tri = _triangle(n_query).to(probs.device) if square else None
    causal = square
    for head in range(n_heads):
        quantized = torch.mul(probs[head], SCALE, out=scratch).clamp_(0, SCALE).round_()  # whole numbers 0..SCALE
        if causal:
            out[head, : len(tri)].copy_(torch.index_select(quantized.view(-1), 0, tri))
            causal = bool(quantized.triu_(1).amax() == 0)  # values are >= 0: nothing above the diagonal
        if not causal:
            break
    if causal:
        return TRIANGLE
    for head in range(n_heads):
        out[head, : n_query * n_key].copy_(torch.mul(probs[head], SCALE, out=scratch).clamp_(0, SCALE).round_().view(-1))
    return FULL


def _stored_size(codec: str, shape: list[int]) -> int:
    n_query, n_key = shape
    return n_query * (n_query + 1) // 2 if codec == TRIANGLE else n_query * n_key


def encode_pattern(pattern: torch.Tensor) -> tuple[str, bytes]:
    """(codec, bytes) for one head's pattern [query_pos, key_pos]."""
    probs = pattern.detach().float().cpu()[None]
    out = torch.empty((1, probs.shape[-2] * probs.shape[-1]), dtype=torch.uint16)
    codec = _stored_form(probs, out)
    return codec, _pack_quantized(out[0, : _stored_size(codec, list(probs.shape[-2:]))].numpy())


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


def _thumbnail_bytes(pooled: torch.Tensor) -> tuple[bytes, list[int]]:
    data = (pooled.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return zlib.compress(data.tobytes(), level=1), list(data.shape)


def _thumbnail_slice(iteration: int, layers: list[torch.Tensor | None]) -> Slice:
    """One iteration's thumbnails, [head, s, s] per layer (None: a layer without attention, blank)."""
    blank = torch.zeros_like(next(pooled for pooled in layers if pooled is not None))
    data, shape = _thumbnail_bytes(torch.stack([blank if pooled is None else pooled for pooled in layers]).cpu())  # [layer, head, s, s]
    return Slice("thumbnail", iteration, -1, -1, THUMBNAIL, shape, data)


def decode_thumbnails(data: bytes, shape: list[int]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(data), dtype=np.uint8).reshape(shape)


class PatternStore:
    """Every (iteration, layer)'s patterns [head, query_pos, key_pos], kept in stored form.

    `add` takes one layer's float32 probabilities while the forward pass holds them and keeps
    their quantized lower triangle (the bytes the codec will compress) and max-pooled previews;
    `blobs` compresses them, releasing each layer as it goes. A layer that fired once in a
    multi-iteration pass (outside a retrofit loop) has the same pattern at every iteration.
    """

    SLAB = 16  # firings per storage slab

    def __init__(self, n_layers: int | None = None) -> None:
        self.n_layers = n_layers  # None: as many as fired (every layer attends)
        self.values: dict[tuple[int, int], tuple[str, torch.Tensor]] = {}  # -> (codec, uint16 [head, n])
        self.pooled: dict[tuple[int, int], torch.Tensor] = {}  # -> float32 [head, s, s]
        self.shape: list[int] = []
        self._slabs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._used = 0

    def _storage(self, n_heads: int, n_values: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint16 [head, n_values], float32 [head, side, side]): one firing's rows of the current
        slabs. Slabs are allocated SLAB firings at a time (pages are touched only where written):
        a few tensors per layer, kept while the forward pass allocates and frees its own, pinned
        the allocator's heap so that it grew by 10-20 MB a layer (peak RSS +30% at T = 1024)."""
        if self._slabs is None or self._used == self.SLAB or self._slabs[0].shape[1:] != (n_heads, n_values) or self._slabs[1].shape[-1] != side:
            self._slabs = (
                torch.empty((self.SLAB, n_heads, n_values), dtype=torch.uint16),
                torch.empty((self.SLAB, n_heads, side, side)),
            )
            self._used = 0
        self._used += 1
        return self._slabs[0][self._used - 1], self._slabs[1][self._used - 1]

    def add(self, iteration: int, layer: int, probs: torch.Tensor) -> None:
        """probs: [head, query_pos, key_pos] float32 (only read)."""
        self.shape = list(probs.shape[-2:])
        n_heads, n_query, n_key = probs.shape
        values, pooled = self._storage(n_heads, n_query * n_key, min(THUMBNAIL_SIZE, n_key))
        pooled.copy_(_max_pool(probs))
        codec = _stored_form(probs, values)
        self.values[iteration, layer] = codec, values[:, : _stored_size(codec, self.shape)]
        self.pooled[iteration, layer] = pooled

    def slices(self) -> list[Slice]:
        """One slice per (iteration, layer, head) and one thumbnail slice per iteration. Each layer's
        values are released once compressed for the last iteration that shows them."""
        n_layers = self.n_layers or 1 + max(layer for _, layer in self.values)
        grid = by_iteration({key: key for key in self.values}, n_layers, missing=lambda key: None)  # None: no attention
        uses = Counter(key for row in grid for key in row if key is not None)
        out = []
        # zlib releases the GIL: a layer's heads compress on every core (0.87 s -> 0.45 s at T = 1024 on 2)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for iteration, keys in enumerate(grid):
                for layer, key in enumerate(keys):
                    if key is None:
                        continue
                    uses[key] -= 1
                    codec, values = self.values.pop(key) if uses[key] == 0 else self.values[key]
                    packed = pool.map(_pack_quantized, values.numpy().view(np.uint16))  # one head per row
                    out += [Slice("pattern", iteration, layer, head, codec, self.shape, data) for head, data in enumerate(packed)]
                out.append(_thumbnail_slice(iteration, [None if key is None else self.pooled[key] for key in keys]))
        return out


class KeptAttention:
    """The kept path's stored form: every (iteration, layer)'s post-rotary queries [head, T, d] and
    keys [kv_head, T, d] in float32 with its AttentionRule, from which any head is recomputed
    exactly (attention_rule.py), and the max-pooled thumbnails, pooled from the rows as they stream
    by (equal to PatternStore's of the whole patterns). Per token it holds 4 d_head (head + kv_head)
    bytes a layer where the patterns hold 2 T head: at T = 8,192 with d_head 64, 3% of fp16 patterns."""

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self.kept: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, AttentionRule]] = {}
        self.pooled: dict[tuple[int, int], torch.Tensor] = {}  # -> float32 [head, s, s]

    def add(self, iteration: int, layer: int, query: torch.Tensor, key: torch.Tensor, rule: AttentionRule) -> None:
        self.kept[iteration, layer] = (query.float().cpu().contiguous(), key.float().cpu().contiguous(), rule)  # an accelerator's too

    def pool(self, iteration: int, layer: int, rows: "Rows | LayerRows") -> None:
        """Fold one chunk of rows (or a whole layer's, from the kernel) into the firing's thumbnails."""
        side = min(THUMBNAIL_SIZE, rows.n_pos)
        columns = rows.column_max(side)  # [head, rows, column bin]
        n_heads, n_rows, _ = columns.shape
        if (iteration, layer) not in self.pooled:
            self.pooled[iteration, layer] = columns.new_zeros((n_heads, side, side))
        pooled = self.pooled[iteration, layer]
        for row, (start, end) in enumerate(bins(rows.n_pos, side)):
            start, end = max(start, rows.start), min(end, rows.start + n_rows)
            if start < end:
                torch.maximum(pooled[:, row], columns[:, start - rows.start : end - rows.start].amax(1), out=pooled[:, row])

    def slices(self) -> list[Slice]:
        """Per firing shown at an iteration: one "query" slice per head, one "key" per key head (raw
        float32 [T, d]), one "rule" (layer, head -1); and one thumbnail slice per iteration."""
        grid = by_iteration({key: key for key in self.kept}, self.n_layers, missing=lambda key: None)  # None: no attention
        uses = Counter(key for row in grid for key in row if key is not None)
        out = []
        for iteration, keys in enumerate(grid):
            for layer, key in enumerate(keys):
                if key is None:
                    continue
                uses[key] -= 1
                query, keys_, rule = self.kept.pop(key) if uses[key] == 0 else self.kept[key]  # released once written
                out += [Slice("query", iteration, layer, head, F32, list(q.shape), q.numpy().tobytes()) for head, q in enumerate(query)]
                out += [Slice("key", iteration, layer, head, F32, list(k.shape), k.numpy().tobytes()) for head, k in enumerate(keys_)]
                out.append(Slice("rule", iteration, layer, -1, RULE, [rule.n_pos], rule.to_bytes()))
            out.append(_thumbnail_slice(iteration, [None if key is None else self.pooled[key] for key in keys]))
        return out


def decode_f32(data: bytes, shape: list[int]) -> torch.Tensor:
    """A stored query or key: float32 [pos, d_head]."""
    return torch.from_numpy(np.frombuffer(data, dtype="<f4").reshape(shape).copy())
