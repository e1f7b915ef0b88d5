"""Code shipped in a model folder (config.json `auto_map`) runs only with LOUPE_TRUST_REMOTE_CODE=1:
without it the model is listed with a warning and every analysis is refused before any work."""

import json

from ..conftest import refused
from ..tiny_models import build_tiny_llama


def test_a_folder_with_remote_code_is_refused_up_front(client_over, tmp_path):
    root = tmp_path / "dirs"
    folder = build_tiny_llama(root / "custom")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    client = client_over(root)
    listed = {m["id"]: m for m in client.get("/api/models").json()}["local/custom"]
    assert any("LOUPE_TRUST_REMOTE_CODE" in warning for warning in listed["warnings"])
    response = client.post("/api/analyses", json={"analysis": "attention", "model": "local/custom", "text": "a b c"})
    assert "does not run remote code" in refused(response, "remote_code")
    assert client.get("/api/analyses").json()["total"] == 0  # nothing was started, nothing stored
