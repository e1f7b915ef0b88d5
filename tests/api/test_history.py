"""GET /api/analyses: the history, newest first, filtered and paged, on a real SQLite file."""

import time

from ..conftest import TINY

TEXTS = [f"Sentence number {i} about attention heads." for i in range(5)]


def test_history_is_newest_first_filtered_and_paged(client):
    ids = []
    for text in TEXTS:
        ids.append(client.post("/api/analyses", json={"analysis": "attention", "model": TINY, "text": text}).json()["id"])
        time.sleep(0.01)  # distinct creation times
    scores = client.post("/api/analyses", json={"analysis": "head_scores", "model": TINY, "params": {"seq_len": 8}}).json()
    failed = client.post("/api/analyses", json={"analysis": "attention", "model": TINY, "text": "copy " * 300})
    assert failed.status_code == 413

    everything = client.get("/api/analyses").json()
    assert everything["total"] == 7 and everything["next_offset"] is None
    assert [item["id"] for item in everything["items"]][1:] == [scores["id"], *reversed(ids)]  # newest first
    assert everything["items"][0]["status"] == "error"

    attention = client.get("/api/analyses", params={"analysis": "attention", "status": "done"}).json()
    assert [item["id"] for item in attention["items"]] == list(reversed(ids))
    assert attention["items"][0]["text_start"] == TEXTS[-1] and attention["items"][0]["created_at"].endswith(("+00:00", "Z"))

    first = client.get("/api/analyses", params={"analysis": "attention", "status": "done", "limit": 2}).json()
    second = client.get("/api/analyses", params={"analysis": "attention", "status": "done", "limit": 2, "offset": first["next_offset"]}).json()
    last = client.get("/api/analyses", params={"analysis": "attention", "status": "done", "limit": 2, "offset": 4}).json()
    pages = [item["id"] for page in (first, second, last) for item in page["items"]]
    assert pages == list(reversed(ids)) and first["next_offset"] == 2 and last["next_offset"] is None

    assert client.get("/api/analyses", params={"model": "no-such-model"}).json() == {"items": [], "total": 0, "next_offset": None}
    assert client.get("/api/analyses", params={"status": "bogus"}).status_code == 422
    assert client.get("/api/analyses", params={"limit": 0}).status_code == 422
