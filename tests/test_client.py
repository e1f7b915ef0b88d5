"""loupe.client against a real server and in-process: its patterns equal the API's slices (decoded
here from the documented format) and the model's own attention; failures carry the server's error."""

import zlib

import httpx
import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from loupe.client import Loupe, LoupeError

from .conftest import TINY
from .server import free_port

TEXT = "When Mary and John went to the store, John gave a drink to Mary."


def decode_stored(response: httpx.Response) -> np.ndarray:
    """format=stored by the recipe the API documents, not Loupe's codec: zlib; n low bytes, then n
    high bytes, of 16-bit fixed point; the causal lower triangle row by row."""
    n_query, n_key = map(int, response.headers["x-shape"].split(","))
    assert response.headers["x-codec"] == "tri-u16-zlib" and n_query == n_key
    raw = np.frombuffer(zlib.decompress(response.content), np.uint8).astype(np.uint32)
    n = n_query * (n_query + 1) // 2
    assert len(raw) == 2 * n
    values = (raw[:n] | raw[n:] << 8) / 65535
    out, start = np.zeros((n_query, n_key)), 0
    for query in range(n_query):
        out[query, : query + 1] = values[start : start + query + 1]
        start += query + 1
    return out


@pytest.fixture(params=["server", "local"])
def mode(request, settings):
    """(client, get): a Loupe client in one mode, and a plain HTTP GET to the same app."""
    if request.param == "server":
        server = request.getfixturevalue("loupe_server")
        with Loupe(server.url) as loupe, httpx.Client(base_url=server.url) as plain:
            yield loupe, plain.get
    else:
        with Loupe.local(settings.model_copy(update={"default_model": TINY})) as loupe:
            yield loupe, loupe.http.get  # the TestClient itself, no client code between


@pytest.fixture(scope="module")
def hf_attentions(model_dir):
    """attentions(token_ids) -> [layer, head, query_pos, key_pos] from HF's eager GPT-2 on the tiny model."""
    model = GPT2LMHeadModel.from_pretrained(model_dir / "gpt2tiny", attn_implementation="eager").eval()

    def attentions(token_ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.tensor([token_ids]), output_attentions=True)
        return torch.cat(out.attentions).numpy()  # [layer, head, query_pos, key_pos]

    return attentions


def test_patterns_equal_the_api_slices_and_the_model(mode, hf_attentions):
    loupe, get = mode
    calls = []
    run = loupe.analyze("attention", model=TINY, text=TEXT, progress=calls.append)
    assert run.status == "done" and len(run.id) == 64 and run.model == TINY
    assert run.permalink == f"{loupe.link_base}/?analysis={run.id}&view=attention"
    assert run.result == get(f"/api/analyses/{run.id}").json()["result"]
    T = len(run.result["tokens"])
    for layer, head in [(0, 0), (1, 3), (1, 0)]:
        pattern = run.pattern(layer, head)
        assert pattern.shape == (T, T) and pattern.dtype == np.float32
        stored = get(f"/api/analyses/{run.id}/attention", params={"layer": layer, "head": head, "format": "stored"})
        np.testing.assert_array_equal(pattern, decode_stored(stored).astype(np.float32))
        u16 = get(f"/api/analyses/{run.id}/attention", params={"layer": layer, "head": head, "format": "u16"})
        np.testing.assert_array_equal(pattern, (np.frombuffer(u16.content, "<u2") / 65535).reshape(T, T).astype(np.float32))
    every = run.patterns()
    assert every.shape == (2, 4, T, T)
    np.testing.assert_array_equal(every[1, 3], run.pattern(1, 3))
    # 16-bit fixed point: within half a step (7.7e-6) of the model's own eager attention
    np.testing.assert_allclose(every, hf_attentions(run.result["token_ids"]), atol=1e-5, rtol=0)
    # the same request again: the same id, from the cache, with nothing to wait for
    again_calls = []
    again = loupe.analyze("attention", model=TINY, text=TEXT, progress=again_calls.append)
    assert again.id == run.id and again.result == run.result and again_calls == []


def test_progress_is_reported_while_it_runs(mode):
    loupe, _ = mode
    calls = []
    run = loupe.wait(loupe.submit("head_scores", params={"seq_len": 12, "batch": 2}, wait_s=0), progress=calls.append)
    assert run.status == "done" and run.model == TINY  # the server's default model
    assert calls and all({"stage", "percent"} <= set(call) and 0 <= call["percent"] <= 100 for call in calls)


def test_errors_carry_the_servers_error(mode):
    loupe, get = mode
    cases = [
        lambda: loupe.analyze("attention", model="local/nope", text=TEXT),
        lambda: loupe.analyze("nope", model=TINY, text=TEXT),
        lambda: loupe.get("0" * 64),
    ]
    for case, (code, status) in zip(cases, [("unknown_model", 404), ("unknown_analysis", 404), ("not_found", 404)]):
        with pytest.raises(LoupeError) as raised:
            case()
        assert (raised.value.code, raised.value.status) == (code, status)
    direct = get("/api/analyses/" + "0" * 64)
    assert direct.json() == {"error": raised.value.message, "code": "not_found", "status": 404}
    run = loupe.analyze("attention", model=TINY, text=TEXT)
    with pytest.raises(LoupeError) as raised:
        run.pattern(layer=2, head=0)
    direct = get(f"/api/analyses/{run.id}/attention", params={"layer": 2, "head": 0, "format": "stored"})
    assert direct.status_code == 422
    assert direct.json() == {"error": raised.value.message, "code": raised.value.code, "status": raised.value.status}
    lens = loupe.analyze("logit_lens", model=TINY, text=TEXT)
    with pytest.raises(LoupeError) as raised:
        lens.pattern(0, 0)
    assert (raised.value.code, raised.value.status) == ("no_patterns", 404)


def test_an_unreachable_server_is_a_network_error():
    with Loupe(f"http://127.0.0.1:{free_port()}", timeout=5) as loupe, pytest.raises(LoupeError) as raised:
        loupe.analyze("attention", model=TINY, text=TEXT)
    assert (raised.value.code, raised.value.status) == ("network_error", 0)


def test_the_token_is_sent(settings):
    secured = settings.model_copy(update={"api_token": "s3cret"})
    with Loupe.local(secured) as loupe, pytest.raises(LoupeError) as raised:
        loupe.analyze("attention", model=TINY, text=TEXT)
    assert raised.value.status == 401
    with Loupe.local(secured, token="s3cret") as loupe:
        assert loupe.analyze("attention", model=TINY, text=TEXT).status == "done"
