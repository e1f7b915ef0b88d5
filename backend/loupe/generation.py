"""KV-cache generation that records, for every generated token, where each head's attention went.

With the KV cache, each step after the prompt runs one new position, so attention is recorded
(capture.py) with a single query row `[batch, head, 1, key_pos]`; the prompt pass records the whole
prompt, of which only the last row (the one that predicts the first new token) matters. For every head, only three
sums of that row are kept: attention to BOS (key 0), to the rest of the prompt (keys 1..P-1), and
to the tokens generated so far (keys P..). Generated token i is predicted by the query at position
P-1+i, which sees i generated keys. A looped model records each layer once per iteration, so the
sums keep Loupe's `[iteration, layer, head]` layout; it runs without the KV cache (see below).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import InvalidInput, TooLong
from .capture import recording_attention
from .loops import LoopSpec, by_iteration
from .model_store import LoadedModel

SPANS = ("bos", "prompt", "generated")


@dataclass
class Generation:
    """Generated tokens and, per generated token, each head's attention sums by span."""

    prompt_ids: torch.Tensor  # [prompt_pos]
    new_ids: torch.Tensor  # [new]
    bos: torch.Tensor  # [new, iteration, layer, head]: attention to key 0
    prompt: torch.Tensor  # [new, iteration, layer, head]: summed over keys 1..P-1
    generated: torch.Tensor  # [new, iteration, layer, head]: summed over keys P..P-1+i

    @property
    def n_prompt(self) -> int:
        return len(self.prompt_ids)


def span_sums(rows: torch.Tensor, n_prompt: int) -> torch.Tensor:
    """[..., 3] attention to (BOS, prompt after BOS, generated) of query rows [..., key_pos].

    Keys past the last one a row can see carry zero attention, so a full causal pattern's rows
    can be summed the same way as the single rows of a cached step."""
    bos = rows[..., 0]
    prompt = rows[..., 1:n_prompt].sum(-1)
    generated = rows[..., n_prompt:].sum(-1)
    return torch.stack([bos, prompt, generated], dim=-1)  # [..., 3]


def _pick(logits: torch.Tensor, temperature: float | None, generator: torch.Generator | None) -> torch.Tensor:
    """[1, 1] next token id from last-position logits [1, d_vocab]: argmax, or a seeded sample."""
    if temperature is None:
        return logits.argmax(-1, keepdim=True)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [1, d_vocab]
    return torch.multinomial(probs, 1, generator=generator)


def generate_with_attention(
    model: LoadedModel,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float | None = None,
    seed: int = 0,
    stop_ids: Sequence[int] = (),
    loop: LoopSpec | None = None,
) -> Generation:
    """Generate up to `max_new_tokens` after `prompt_ids` ([1, prompt_pos], BOS first) with the
    KV cache (a looped model: without), greedily (temperature None) or by sampling with a seeded generator, stopping after a
    token in `stop_ids`. Records each head's attention sums for every generated token, at every
    iteration of `loop` (loops.looping).

    The caller must hold model.lock: recording changes the model for its duration (restored even
    on error)."""
    if prompt_ids.ndim != 2 or prompt_ids.shape[0] != 1:
        raise InvalidInput("Generation takes one prompt at a time.")
    n_prompt = prompt_ids.shape[1]
    if n_prompt < 2:
        raise InvalidInput("The prompt needs at least one token after BOS.")
    if n_prompt + max_new_tokens - 1 > model.n_ctx:  # the last new token is never fed back
        raise TooLong(
            f"The prompt is {n_prompt} tokens; with {max_new_tokens} new tokens it exceeds {model.id}'s context of {model.n_ctx}."
        )
    rows: dict[tuple[int, int], torch.Tensor] = {}

    def keep(iteration: int, layer: int, probs: torch.Tensor) -> None:
        rows[iteration, layer] = probs[0, :, -1].clone()  # [head, key_pos]: the row that predicts the next token

    generator = torch.Generator().manual_seed(seed) if temperature is not None else None
    stops = set(stop_ids)
    new_ids: list[torch.Tensor] = []
    sums: list[torch.Tensor] = []
    # A looped model re-runs its blocks within one forward, and an HF cache would grow on every
    # repeated call: it recomputes the whole sequence each step instead (the same rows, slower).
    cached = (
        model.n_iterations == 1
        and (loop is None or (loop.times or 1) == 1)
        and getattr(model.bridge.adapter, "supports_kv_cache", True)  # Loupe's looped classes keep none
    )
    with recording_attention(model, keep, loop) as recorder:
        logits, past = recorder.forward(prompt_ids, use_cache=cached)  # [1, 1, d_vocab]
        sequence = prompt_ids
        for step in range(max_new_tokens):
            step_rows = torch.stack([torch.stack(row) for row in by_iteration(rows, model.n_layers)])
            sums.append(span_sums(step_rows, n_prompt))  # [iteration, layer, head, 3]
            rows.clear()
            token = _pick(logits[:, -1].float(), temperature, generator).to(sequence.device)  # [1, 1]; a spread model's logits are on its last device
            new_ids.append(token[0])
            if int(token) in stops or step == max_new_tokens - 1:
                break
            if cached:
                logits, past = recorder.forward(token, past=past, use_cache=True)
            else:
                sequence = torch.cat([sequence, token], dim=1)  # [1, pos + 1]
                logits, _ = recorder.forward(sequence)
    spans = torch.stack(sums)  # [new, iteration, layer, head, 3]
    return Generation(
        prompt_ids=prompt_ids[0].clone(),
        new_ids=torch.cat(new_ids),
        bos=spans[..., 0],
        prompt=spans[..., 1],
        generated=spans[..., 2],
    )
