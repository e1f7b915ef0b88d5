"""A head's pattern as the page draws it at any zoom: a region of query x key positions, max-pooled
to at most size x size cells, as 16-bit weights.

At T = 8,192 a head is 67M weights: the page asks for the whole map at its own pixel size (the
overview) and, as it zooms, for the region in view at that size, down to single tokens. A cell is
the maximum over its block, so a lone strong weight stays visible at every zoom.
"""

from collections.abc import Iterable

import numpy as np
import torch

from .attention_rule import Block
from .codec import SCALE
from .errors import InvalidInput

MAX_SIZE = 2048


def check_region(n_pos: int, q0: int, q1: int | None, k0: int, k1: int | None, size: int) -> tuple[int, int, int, int]:
    """The region (q0, q1, k0, k1) with its defaults (the whole map), or InvalidInput naming what is off."""
    q1, k1 = n_pos if q1 is None else q1, n_pos if k1 is None else k1
    for axis, lo, hi in (("query", q0, q1), ("key", k0, k1)):
        if not 0 <= lo < hi <= n_pos:
            raise InvalidInput(f"The {axis} range {lo}..{hi} is not within 0..{n_pos} (start < end).")
    if not 1 <= size <= MAX_SIZE:
        raise InvalidInput(f"size must be in 1..{MAX_SIZE}, got {size}.")
    return q0, q1, k0, k1


def tile(blocks: Iterable[Block], region: tuple[int, int, int, int], size: int, per_row: bool) -> np.ndarray:
    """uint16 [min(size, q1 - q0), min(size, k1 - k0)] (weight * 65535) of the region, from the
    head's rows [q0, q1) a Block at a time. `per_row`: each row is divided by its own maximum first
    (its strongest key shows as 1)."""
    q0, q1, k0, k1 = region
    n_cols = min(size, k1 - k0)
    columns = torch.empty((q1 - q0, n_cols))  # [query, column bin]: pooled over keys, block by block
    width = (k1 - k0) // n_cols if (k1 - k0) % n_cols == 0 else None  # equal column bins: pooled in place
    for block in blocks:
        probs = block.probs / block.probs.amax(-1, keepdim=True).clamp(min=1e-30) if per_row else block.probs
        lo, hi = max(k0, block.key_start), min(k1, block.key_start + probs.shape[-1])  # the region's keys it holds
        rows = columns[block.start - q0 : block.start - q0 + len(probs)]
        if width is not None:
            rows.zero_()  # weights are >= 0 and every key it does not hold is 0: a bin's max is that of its held part
            if lo < hi:
                _pool_equal(probs[:, lo - block.key_start : hi - block.key_start], lo - k0, width, rows)
            continue
        held = probs.new_zeros((len(probs), k1 - k0))
        if lo < hi:
            held[:, lo - k0 : hi - k0] = probs[:, lo - block.key_start : hi - block.key_start]
        rows.copy_(torch.nn.functional.adaptive_max_pool1d(held[None], n_cols)[0])
    pooled = torch.nn.functional.adaptive_max_pool1d(columns.T[None].contiguous(), min(size, q1 - q0))[0].T  # [row bin, column bin]
    return (pooled.clamp(0, 1) * SCALE).round().to(torch.int32).numpy().astype("<u2")


def _pool_equal(held: torch.Tensor, offset: int, width: int, out: torch.Tensor) -> None:
    """Max of held keys [offset, offset + n) (relative to the region, [rows, n]) into bins of `width`
    keys (out [rows, bins]): the bins it covers whole in one strided view, the two it cuts one by one."""
    n_keys = held.shape[-1]
    first_whole, end_whole = -(-offset // width), (offset + n_keys) // width  # bins wholly inside
    if first_whole < end_whole:
        inner = held[:, first_whole * width - offset : end_whole * width - offset]
        out[:, first_whole:end_whole] = inner.unflatten(-1, (end_whole - first_whole, width)).amax(-1)
    for part in {offset // width, (offset + n_keys - 1) // width} - set(range(first_whole, end_whole)):
        start, end = max(part * width, offset), min((part + 1) * width, offset + n_keys)
        out[:, part] = held[:, start - offset : end - offset].amax(-1)
