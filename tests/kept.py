"""The kept path's patterns, recomputed from what it keeps, for tests to compare with a reference."""

from contextlib import contextmanager

import torch

from loupe import attention_rule, fused
from loupe.analyses.attention import StreamedStats
from loupe.capture import summarize_and_keep
from loupe.codec import KeptAttention
from loupe.loops import LoopSpec


@contextmanager
def small_blocks(compiled: bool = True):
    """16 query rows a block (the least) and, in the compiled kernel, tiles of 8 keys: a short test
    prompt spans several of each, as a long one does. `compiled` False: the torch rows run instead."""
    saved = attention_rule.CHUNK_BYTES, fused.BLOCK_ROWS, fused.TILE_KEYS, fused.ENABLED
    attention_rule.CHUNK_BYTES, fused.BLOCK_ROWS, fused.TILE_KEYS, fused.ENABLED = 1, 16, 8, compiled
    try:
        yield
    finally:
        attention_rule.CHUNK_BYTES, fused.BLOCK_ROWS, fused.TILE_KEYS, fused.ENABLED = saved


def keep(
    model, tokens: torch.Tensor, loop: LoopSpec | None = None, bidirectional: bool = False, compiled: bool = True
) -> tuple[KeptAttention, StreamedStats]:
    """One kept-path forward over tokens [1, pos], in small blocks, the model's lock held."""
    stats = StreamedStats(tokens.shape[1], bidirectional)
    with small_blocks(compiled), model.lock:
        return summarize_and_keep(model, tokens, stats.add, loop), stats


def recomputed(kept: KeptAttention, iteration: int, layer: int) -> torch.Tensor:
    """[head, query_pos, key_pos] at one iteration, every head recomputed from its kept queries, keys and
    rule; a layer that fired once (a looped model's prelude or coda) shows that firing at every iteration."""
    query, key, rule = kept.kept.get((iteration, layer)) or kept.kept[0, layer]
    heads = [rule.of_head(h).head(query[h], key[h // rule.groups]) for h in range(len(query))]
    return torch.stack([torch.cat([block.full(rule.n_pos) for block in blocks]) for blocks in heads])
