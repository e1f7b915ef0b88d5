"""A Python client for Loupe: run an analysis on a server, or in-process with no server, through one code path.

    from loupe.client import Loupe
    with Loupe.local() as loupe:                       # or Loupe("http://127.0.0.1:8000", token=...)
        run = loupe.analyze("attention", model="induction-2l", text=" cat dog cat dog")
        run.permalink, run.result["head_stats"], run.pattern(layer=1, head=0)  # [query_pos, key_pos]

Both modes speak HTTP to the same routes (a server over the network, or the app itself through
Starlette's TestClient, which runs its lifespan), so what the client reads is what the page reads.
"""

import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from .codec import decode_pattern

Progress = Callable[[dict], None]  # called with {"stage", "percent"} while an analysis is queued or running


class LoupeError(Exception):
    """A failure in the server's one error shape: `code` (e.g. `unknown_model`), `status` (the HTTP
    status; 0 when the server was not reached) and `message`; `retry_after` in seconds for a 429."""

    def __init__(self, message: str, code: str = "network_error", status: int = 0, retry_after: int | None = None):
        super().__init__(message)
        self.message, self.code, self.status, self.retry_after = message, code, status, retry_after

    @classmethod
    def from_body(cls, body: dict, status: int = 500) -> "LoupeError":
        return cls(str(body.get("error", "The analysis failed.")), str(body.get("code", "analysis_failed")),
                   int(body.get("status", status)))

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, {self.status})"


class Analysis:
    """A stored analysis: `id` (its permalink id), `status`, `result` (the summary dict, once done),
    `permalink` (the page's URL for it), and its attention patterns by slice."""

    def __init__(self, client: "Loupe", view: dict):
        self._client, self.view = client, view
        self.id: str = view["id"]
        self.analysis: str = view["analysis"]
        self.model: str = view["model"]
        self.status: str = view["status"]
        self.result: dict | None = view.get("result")
        self.progress: dict | None = view.get("progress")

    @property
    def permalink(self) -> str:
        return self._client.permalink(self.id, self.analysis)

    def pattern(self, layer: int, head: int, iteration: int = 0) -> np.ndarray:
        """float32 [query_pos, key_pos]: one head's stored pattern (16-bit fixed point, so within
        7.7e-6 of what the model computed), fetched in its stored form as the page fetches it."""
        return self._client.pattern(self.id, layer, head, iteration)

    def patterns(self, iteration: int = 0) -> np.ndarray:
        """float32 [layer, head, query_pos, key_pos] of one iteration; NaN for a layer without
        attention (a hybrid stack's state-space layers). One request per head."""
        result = self.result or {}
        layers = result.get("attention_layers")
        attending = set(range(result["n_layers"]) if layers is None else layers)
        n_tokens = len(result["tokens"])
        return np.stack([
            np.stack([
                self.pattern(layer, head, iteration) if layer in attending else np.full((n_tokens, n_tokens), np.nan, np.float32)
                for head in range(result["n_heads"])
            ])
            for layer in range(result["n_layers"])
        ])  # [layer, head, query_pos, key_pos]

    def __repr__(self) -> str:
        return f"Analysis({self.analysis!r}, model={self.model!r}, id={self.id[:12]}…, status={self.status!r})"


class Loupe:
    """A Loupe server (`Loupe(url, token=...)`) or Loupe in this process (`Loupe.local(settings)`)."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, *, timeout: float = 120.0,
                 http: httpx.Client | None = None, link_base: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = http if http is not None else httpx.Client(base_url=url, timeout=timeout)
        self.http.headers.update(headers)
        self.link_base = (link_base or url).rstrip("/")

    @classmethod
    def local(cls, settings=None, token: str | None = None) -> "Loupe":
        """Loupe in this process over `settings` (default: the LOUPE_ environment: its data dir,
        models, limits, API token). Permalinks point where `python -m loupe` on the same settings serves."""
        from fastapi.testclient import TestClient

        from .config import get_settings
        from .main import create_app

        settings = settings or get_settings()
        http = TestClient(create_app(settings), raise_server_exceptions=False)
        http.__enter__()  # runs the app's lifespan: the model store, the cache, the job runner
        return cls(token=token, http=http, link_base=f"http://{settings.host}:{settings.port}")

    def close(self) -> None:
        self.http.__exit__(None, None, None)

    def __enter__(self) -> "Loupe":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- HTTP ----------------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs) -> httpx.Response:
        """The response, or LoupeError carrying the server's error body (or why there was none)."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise LoupeError(f"Cannot reach the Loupe server ({err}).") from err
        if response.is_success:
            return response
        retry = response.headers.get("Retry-After", "")
        retry_after = int(retry) if retry.isdigit() else None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            error = LoupeError.from_body(body, response.status_code)
            error.retry_after = retry_after
            raise error
        raise LoupeError(f"{response.status_code} {response.reason_phrase} from {path}", "http_error", response.status_code, retry_after)

    def models(self) -> list[dict]:
        return self._send("GET", "/api/models").json()

    def default_model(self) -> str:
        """The server's default model (LOUPE_DEFAULT_MODEL), or its first one."""
        models = self.models()
        if not models:
            raise LoupeError("The server lists no models.", "unknown_model", 404)
        return next((m["id"] for m in models if m.get("default")), models[0]["id"])

    def get(self, analysis_id: str) -> Analysis:
        """The stored analysis as it stands now (GET /api/analyses/{id})."""
        return Analysis(self, self._send("GET", f"/api/analyses/{analysis_id}").json())

    def permalink(self, analysis_id: str, analysis: str) -> str:
        return f"{self.link_base}/?analysis={analysis_id}&view={analysis}"

    def pattern(self, analysis_id: str, layer: int, head: int, iteration: int = 0) -> np.ndarray:
        """float32 [query_pos, key_pos] of one head at one iteration, from its stored bytes
        (`format=stored`: the codec in X-Codec, the shape in X-Shape)."""
        query = {"layer": layer, "head": head, "iteration": iteration, "format": "stored"}
        response = self._send("GET", f"/api/analyses/{analysis_id}/attention", params=query)
        try:
            shape = [int(n) for n in response.headers["X-Shape"].split(",")]
            return decode_pattern(response.headers["X-Codec"], response.content, shape)
        except (KeyError, ValueError) as err:
            raise LoupeError(f"Malformed pattern from analysis {analysis_id} ({err}).", "bad_response", 500) from err

    # ---- running -------------------------------------------------------------------------------

    def submit(self, analysis: str, model: str | None = None, text: str | None = None, params: dict | None = None,
               wait_s: float = 1.5) -> Analysis:
        """POST the request (the server answers from its cache, or after `wait_s` with its progress)."""
        body: dict[str, Any] = {"analysis": analysis, "model": model or self.default_model(), "params": params or {},
                                "wait_s": wait_s}
        if text is not None:
            body["text"] = text
        return Analysis(self, self._send("POST", "/api/analyses", json=body).json())

    def wait(self, run: Analysis, progress: Progress | None = None, max_delay_s: float = 2.0) -> Analysis:
        """Poll until `run` is done (as the page does: from 0.25 s, 1.5x longer each time, at most
        `max_delay_s`), calling `progress` meanwhile; LoupeError with its stored error if it failed."""
        delay = 0.25
        while run.status in ("queued", "running"):
            if progress:
                progress(run.progress or {"stage": run.status, "percent": 0.0})
            time.sleep(delay)
            delay = min(delay * 1.5, max_delay_s)
            run = self.get(run.id)
        if run.status == "error":
            raise LoupeError.from_body(run.view.get("error") or {})
        if run.status != "done":
            raise LoupeError(f"Analysis {run.id} is {run.status}: post its request again.", run.status, 409)
        return run

    def analyze(self, analysis: str, model: str | None = None, text: str | None = None, params: dict | None = None,
                progress: Progress | None = None, wait_s: float = 1.5) -> Analysis:
        """Run an analysis (or find it in the cache) and return it done. `model`: the server's
        default when None. `progress({"stage", "percent"})` is called while it is queued or running."""
        return self.wait(self.submit(analysis, model, text, params, wait_s), progress)
