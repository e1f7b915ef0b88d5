"""What one layer's attention computes besides its queries and keys, and that computation, row by row.

A long prompt's patterns are not stored: at T = 8,192 a GPT-2-small-sized model has 144 heads of
67M weights each (19 GB in fp16). What makes them is small: each layer's post-rotary queries and
keys ([head, T, d_head], a few MB) and the rule that turns their dot products into probabilities:
the scaling, which key head serves each query head (GQA), each query's visible keys (causal, a
sliding window, a chunk, or all of them: always one interval per row here), soft-capping and
attention sinks. `AttentionRule` holds that rule and `AttentionRule.rows` computes any block of
query rows exactly, in float32. The capture (capture.py) runs the model's attention through it,
chunk by chunk, so no [head, T, T] buffer exists, and the served heads are recomputed through the
same function (runs.py), so what the page shows is what the forward computed.
"""

import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .errors import Unsupported

RULE = "rule-json-zlib"  # codec of a stored rule
F32 = "f32"  # codec of a stored query or key: little-endian float32 [pos, d_head]

# Bytes of scores one chunk of query rows may hold: [head, rows, keys] float32.
CHUNK_BYTES = 96 * 2**20


class NotModelled(Exception):
    """The attention call does something AttentionRule does not model (an unknown argument, half
    precision, dropout, a batch, a row without any visible key): the caller keeps patterns instead."""


@dataclass
class Rows:
    """Probabilities of query rows [start, start + n) of every head: `probs` [head, n, keys] over
    keys [key_start, key_start + keys) (the others are 0), and each row's entropy sum -p log p [head, n]."""

    start: int
    key_start: int
    probs: torch.Tensor
    entropy: torch.Tensor | None
    n_pos: int  # T: every row's keys
    output: torch.Tensor | None = None  # [head, n, d_v]: the attention output of these rows, when asked for

    def at(self, key_pos: torch.Tensor) -> torch.Tensor:
        """[head, n]: each row's weight on its key key_pos [n] (0 outside the keys held, which it does not see)."""
        n_rows, n_keys = self.probs.shape[1:]
        col = key_pos - self.key_start
        held = (col >= 0) & (col < n_keys)
        return torch.where(held, self.probs[:, torch.arange(n_rows, device=self.probs.device), col.clamp(0, n_keys - 1)], 0.0)

    def column_max(self, side: int) -> torch.Tensor:
        """[head, n, side]: each row's largest weight in each of `side` column bins (`bins`)."""
        n_heads, n_rows, n_keys = self.probs.shape
        columns = self.probs.new_zeros((n_heads, n_rows, side))
        for col, (start, end) in enumerate(bins(self.n_pos, side)):
            start, end = max(start, self.key_start), min(end, self.key_start + n_keys)
            if start < end:
                columns[..., col] = self.probs[..., start - self.key_start : end - self.key_start].amax(-1)
        return columns


@dataclass
class Block:
    """Rows [start, start + n) of one head's pattern: `probs` float32 [n, keys] over keys
    [key_start, key_start + keys); every other weight of these rows is 0."""

    start: int
    key_start: int
    probs: torch.Tensor

    def full(self, n_pos: int) -> torch.Tensor:
        """The rows over all n_pos keys: float32 [n, n_pos]."""
        out = self.probs.new_zeros((len(self.probs), n_pos))
        out[:, self.key_start : self.key_start + self.probs.shape[-1]] = self.probs
        return out


@dataclass
class AttentionRule:
    scaling: float
    groups: int  # query heads per key head
    lo: torch.Tensor  # int64 [query_pos]: the first key each query sees
    hi: torch.Tensor  # int64 [query_pos]: one past its last
    softcap: float | None = None
    sinks: torch.Tensor | None = None  # float32 [head]: a logit per head that takes probability and is no token

    @property
    def n_pos(self) -> int:
        return len(self.lo)

    # ---- from an attention call -------------------------------------------------------------------

    @classmethod
    def of_call(
        cls, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
        scaling: float | None, softcap: float | None, sinks: torch.Tensor | None, is_causal: bool | None,
    ) -> "AttentionRule":
        """The rule of one attention call (query [1, head, T, d], key [1, kv_head, T, d], the boolean
        mask `sdpa_mask` made, True where a query sees a key, or None when it is plainly causal or
        plainly bidirectional: the module says which, as SDPA reads it)."""
        n_pos = query.shape[2]
        if key.shape[2] != n_pos:
            raise NotModelled("keys beyond the queries")
        pos = torch.arange(n_pos)
        if mask is None:
            causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
            lo, hi = torch.zeros(n_pos, dtype=torch.long), (pos + 1 if causal else torch.full((n_pos,), n_pos))
        else:
            lo, hi = _intervals(mask)
        if bool((hi <= lo).any()):
            raise NotModelled("a query that sees no key")
        return cls(
            scaling=float(query.shape[-1] ** -0.5 if scaling is None else scaling),
            groups=query.shape[1] // key.shape[1],
            lo=lo, hi=hi, softcap=None if softcap is None else float(softcap),
            sinks=None if sinks is None else sinks.detach().float().cpu().reshape(-1),
        )

    # ---- stored form ------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        return zlib.compress(json.dumps({
            "scaling": self.scaling, "groups": self.groups, "lo": self.lo.tolist(), "hi": self.hi.tolist(),
            "softcap": self.softcap, "sinks": None if self.sinks is None else self.sinks.tolist(),
        }).encode(), 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> "AttentionRule":
        fields = json.loads(zlib.decompress(data))
        return cls(
            scaling=fields["scaling"], groups=fields["groups"], lo=torch.tensor(fields["lo"]), hi=torch.tensor(fields["hi"]),
            softcap=fields["softcap"], sinks=None if fields["sinks"] is None else torch.tensor(fields["sinks"]),
        )

    def of_head(self, head: int) -> "AttentionRule":
        """The rule of one query head alone (its sink, if any)."""
        sinks = None if self.sinks is None else self.sinks[head : head + 1]
        return AttentionRule(self.scaling, 1, self.lo, self.hi, self.softcap, sinks)

    # ---- the computation --------------------------------------------------------------------------

    def chunk_rows(self, n_heads: int) -> int:
        """Query rows per chunk: CHUNK_BYTES of scores at most, 16 rows at least."""
        return max(16, min(self.n_pos, CHUNK_BYTES // (4 * n_heads * self.n_pos)))

    def rows(
        self, query: torch.Tensor, key: torch.Tensor, start: int, out: torch.Tensor | None = None,
        values: torch.Tensor | None = None, entropy: bool = True,
    ) -> Rows:
        """Rows [start, start + n) of every head: query [head, n, d] (those rows' queries), key
        [head, T, d] (each query head's keys, groups already expanded). `out`: a float32 scratch
        of at least head * n * keys values the probabilities may be written into. `values`
        [head, T, d_v + d], each head's values then its keys: the rows' attention output is
        computed too, in the one product that also gives the entropy. `entropy` False: none."""
        n_heads, n_rows, _ = query.shape
        lo, hi = self.lo[start : start + n_rows].to(query.device), self.hi[start : start + n_rows].to(query.device)
        sinks = None if self.sinks is None else self.sinks.to(query.device).view(-1, 1, 1)
        first, last = int(lo.min()), int(hi.max())  # the keys any of these rows sees
        n_keys = last - first
        scores = (out.view(-1)[: n_heads * n_rows * n_keys].view(n_heads, n_rows, n_keys) if out is not None
                  else query.new_empty((n_heads, n_rows, n_keys)))
        torch.matmul(query * self.scaling, key[:, first:last].transpose(-1, -2), out=scores)  # [head, n, keys]
        if self.softcap is not None:
            scores.div_(self.softcap).tanh_().mul_(self.softcap)
        _mask_outside(scores, lo - first, hi - first)
        if self.sinks is None:
            torch._softmax(scores, -1, False, out=scores)  # in place, row by row in cache: bitwise torch.softmax
            log_total = None
        else:  # the sink takes its share of the denominator and is no key
            peak = torch.maximum(scores.amax(-1, keepdim=True), sinks)  # [head, n, 1]
            scores.sub_(peak).exp_()
            total = scores.sum(-1, keepdim=True) + torch.exp(sinks - peak)
            scores.div_(total)
            log_total = (peak + total.log()).squeeze(-1)  # [head, n]: log of the softmax' denominator
        products = None if values is None else torch.matmul(scores, values[:, first:last])  # [head, n, d_v + d]
        output = None if products is None else products[..., : values.shape[-1] - key.shape[-1]]
        spread = None
        if entropy and self.softcap is None:  # -sum p log p = log Z sum p - sum p s, and sum p s = scale q . (P K)
            if log_total is None:
                log_total = self._log_total(query, key, scores, start, first)
            mass = scores.sum(-1) if self.sinks is not None else 1.0
            weighted = torch.matmul(scores, key[:, first:last]) if products is None else products[..., output.shape[-1] :]  # [head, n, d]
            spread = log_total * mass - (query * self.scaling * weighted).sum(-1)
        elif entropy:
            spread = -torch.special.xlogy(scores, scores).sum(-1)
        return Rows(start, first, scores, spread, self.n_pos, output)

    def _log_total(self, query: torch.Tensor, key: torch.Tensor, probs: torch.Tensor, start: int, first: int) -> torch.Tensor:
        """[head, n] log of each row's softmax denominator, log Z = s_j - log p_j for the key j among the
        row's own, previous and first visible ones with the largest p (whose float32 p then holds its full
        precision); a row where even that p is below 1e-30 is summed again from its scores."""
        n_heads, n_rows, n_keys = probs.shape
        rows = torch.arange(n_rows, device=probs.device)
        lo, hi = self.lo[start : start + n_rows].to(probs.device), self.hi[start : start + n_rows].to(probs.device)
        pos = rows + start
        candidates = torch.stack([pos, pos - 1, lo]).clamp(min=0)  # [3, n]
        visible = (candidates >= lo) & (candidates < hi)
        columns = (candidates - first).clamp(0, n_keys - 1)
        picked = torch.stack([probs[:, rows, column] for column in columns]).where(visible[:, None], 0.0)  # [3, head, n]
        best, which = picked.max(0)  # [head, n]
        chosen = candidates[which, rows]  # [head, n]: the key position picked
        chosen_keys = key.gather(1, chosen[..., None].expand(-1, -1, key.shape[-1]))  # [head, n, d]
        log_total = (query * self.scaling * chosen_keys).sum(-1) - best.log()
        if bool((best < 1e-30).any()):  # rows whose every candidate underflowed: their denominator summed anew
            for head, row in (best < 1e-30).nonzero().tolist():
                scores = (query[head, row] * self.scaling) @ key[head, lo[row] : hi[row]].T
                log_total[head, row] = torch.logsumexp(scores, -1)
        return log_total

    def head(self, query: torch.Tensor, key: torch.Tensor, row_start: int = 0, row_end: int | None = None) -> Iterator[Block]:
        """One head's rows [row_start, row_end) (query, key [T, d]; a rule of_head), a block at a
        time: each the keys some of its rows see (the rest of every row is 0)."""
        row_end = self.n_pos if row_end is None else row_end
        step = min(512, self.chunk_rows(1))  # a request's scratch: 16 MB at T = 8,192
        for start in range(row_start, row_end, step):
            rows = self.rows(query[None, start : min(row_end, start + step)], key[None], start, entropy=False)
            yield Block(start, rows.key_start, rows.probs[0])


def bins(n: int, side: int) -> list[tuple[int, int]]:
    """The [start, end) of each of `side` max-pool bins over n positions, as adaptive_max_pool2d takes them."""
    return [(i * n // side, -(-(i + 1) * n // side)) for i in range(side)]


def _mask_outside(scores: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> None:
    """-inf where key < lo or key >= hi of each row ([head, n, keys]; lo, hi relative [n]), writing
    only the columns where some row masks: the band [0, max lo) and [min hi, keys)."""
    n_keys = scores.shape[-1]
    left, right = int(lo.max()), int(hi.min())
    if left > 0:
        cols = torch.arange(left, device=scores.device)
        scores[..., :left].masked_fill_(cols[None, :] < lo[:, None], -math.inf)
    if right < n_keys:
        cols = torch.arange(right, n_keys, device=scores.device)
        scores[..., right:].masked_fill_(cols[None, :] >= hi[:, None], -math.inf)


def _intervals(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) [query_pos] of a boolean mask [1, 1, q, k] whose every row is one run of True;
    NotModelled for any other (padding holes, a per-head or batched mask)."""
    if mask.dtype != torch.bool or mask.shape[0] != 1 or mask.shape[1] != 1:
        raise NotModelled("a mask other than one boolean [1, 1, q, k]")
    rows = mask[0, 0].cpu()
    count = rows.sum(-1)  # [q]
    lo = rows.to(torch.uint8).argmax(-1)  # the first True (0 for an empty row, caught by count)
    hi = lo + count
    step = max(1, (1 << 24) // max(1, rows.shape[-1]))
    cols = torch.arange(rows.shape[-1])
    for start in range(0, rows.shape[0], step):  # every row is exactly its interval
        block = rows[start : start + step]
        want = (cols[None] >= lo[start : start + step, None]) & (cols[None] < hi[start : start + step, None])
        if not torch.equal(block, want):
            raise NotModelled("a mask row that is not one interval of keys")
    return lo.long(), hi.long()


def unsupported_long(model_id: str, n_tokens: int, limit: int, why: str) -> Unsupported:
    """The refusal of a prompt too long to store every pattern of, on a model whose attention
    Loupe cannot recompute (why: what the model does that the rule does not model)."""
    return Unsupported(
        f"{n_tokens} tokens is past the {limit} whose patterns Loupe stores for {model_id}; longer prompts need "
        f"Loupe's exact recompute from queries and keys, which this model's attention is not modelled by ({why}).",
        code="patterns_too_long",
    )
