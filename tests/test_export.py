"""The generic CSV of a result, on hand-built results with known rows."""

from loupe.export import result_rows


def test_head_arrays_get_named_axes_and_the_rest_positions():
    result = {
        "n_iterations": 2, "n_layers": 2, "n_heads": 1,
        "scores": {"x": [[[0.5], [None]], [[1.5], [2.5]]]},  # [iteration][layer][head], a layer without attention
        "accuracy": [[0.1, 0.2], [0.3, 0.4]],  # [iteration][layer]
        "curve": {"fpr": [0.0, 1.0]},
        "flags": [True, False],
        "tokens": ["a", "b"],  # no numbers: no rows
        "signals": [{"lookback": 0.25}],  # a list of records
    }
    header, rows = result_rows(result)
    assert header == ["field", "iteration", "layer", "head", "index_0", "value"]
    assert rows == [
        ["n_iterations", "", "", "", "", 2], ["n_layers", "", "", "", "", 2], ["n_heads", "", "", "", "", 1],
        ["scores.x", 0, 0, 0, "", 0.5], ["scores.x", 0, 1, 0, "", ""], ["scores.x", 1, 0, 0, "", 1.5], ["scores.x", 1, 1, 0, "", 2.5],
        ["accuracy", 0, 0, "", "", 0.1], ["accuracy", 0, 1, "", "", 0.2], ["accuracy", 1, 0, "", "", 0.3], ["accuracy", 1, 1, "", "", 0.4],
        ["curve.fpr", "", "", "", 0, 0.0], ["curve.fpr", "", "", "", 1, 1.0],
        ["flags", "", "", "", 0, 1], ["flags", "", "", "", 1, 0],
        ["signals.lookback", "", "", "", 0, 0.25],
    ]


def test_axes_past_the_head_are_positions():
    result = {"n_iterations": 1, "n_layers": 1, "n_heads": 2, "per_pos": [[[[1, 2], [3]]]]}  # [iteration][layer][head][pos]
    header, rows = result_rows(result)
    assert header == ["field", "iteration", "layer", "head", "index_3", "value"]
    assert [r for r in rows if r[0] == "per_pos"] == [["per_pos", 0, 0, 0, 0, 1], ["per_pos", 0, 0, 0, 1, 2], ["per_pos", 0, 0, 1, 0, 3]]
