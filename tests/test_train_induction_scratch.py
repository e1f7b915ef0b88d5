"""induction-scratch's training data regenerates from (seed, step), and its checkpoints follow the phase change."""

import torch

from models.train_induction_scratch import ROW_KINDS, batch, place_checkpoints, row_kinds, row_len

STREAM = torch.arange(1000) % 97 + 1  # stands in for the English token stream


def test_batch_is_a_function_of_seed_and_step():
    later = batch(7, 3, STREAM)
    batch(0, 3, STREAM)  # drawing another step first changes nothing
    assert torch.equal(batch(7, 3, STREAM), later)
    assert not torch.equal(batch(8, 3, STREAM), later) and not torch.equal(batch(7, 4, STREAM), later)


def test_rows_are_what_row_kinds_says():
    x = batch(5, 0, STREAM)  # [batch, row_len]
    assert x.shape == (len(ROW_KINDS), row_len) and row_kinds() == list(ROW_KINDS)
    assert (x[:, 0] == 0).all()
    for row, kind in zip(x, row_kinds()):
        body = row[1:].tolist()
        if kind == "english":  # a window of the stream
            start = (STREAM == body[0]).nonzero().flatten().tolist()
            assert any(STREAM[s : s + len(body)].tolist() == body for s in start)
        else:  # periodic: some period S <= 64 repeats the first S tokens
            assert kind == "repeat"
            assert any(body[s:] == body[: len(body) - s] for s in range(4, 65))


def test_checkpoints_are_dense_where_the_scores_jump():
    steps = list(range(0, 4001, 25))
    jump = [{"induction": float(s >= 2000), "previous_token": 0.0} for s in steps]
    chosen = place_checkpoints(steps, jump, 40)
    assert len(chosen) == 40 and chosen == sorted(set(chosen)) and chosen[0] == 0 and chosen[-1] == 4000
    near = [s for s in chosen if 1900 <= s <= 2100]
    assert len(near) >= 8  # log spacing alone would put 2 there
