"""A long prompt's head in a real Chromium (longmap.js): the overview from the tile endpoint on a
canvas, a box zoom down to labelled tokens, a hover readout that names the right tokens and weight
at any zoom (checked against the whole head's exact u16 weights), the three colour scales, a
share link that reopens the same zoom, and wheel zoom and Shift- or middle-drag pan, each fetching
one tile when it stops."""

import base64
import re
import struct
import time
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
import pytest

from ..server import running_server
from ..tiny_models import build_tiny_llama
from .conftest import page_maker
from .test_browser import display, url_state, wait_js

pytestmark = pytest.mark.e2e

MODEL = "local/llama2k"  # a tiny Llama: rotary positions, grouped-query attention, a 2,048-token context
SENTENCES = ["The cat sat on the mat", "When Mary and John went to the store", "Harry Potter and the Chamber of Secrets"]
PROMPT = " ".join(f"{SENTENCES[i % 3]} {i}." for i in range(80))  # ~1,770 tokens with the tiny BPE
LAYER, HEAD = 1, 2
MAP = "[data-testid=long-map]"


@pytest.fixture(scope="module")
def long_url(tmp_path_factory):
    """A Loupe server whose only model is `local/llama2k`, taking texts of up to 2,048 tokens."""
    root = tmp_path_factory.mktemp("long_map")
    build_tiny_llama(root / "models" / "llama2k", n_ctx=2048, sharpen=12.0)
    (root / "zoo").mkdir()
    env = {
        "LOUPE_DATA_DIR": str(root / "data"), "LOUPE_MODEL_DIRS": str(root / "models"), "LOUPE_ZOO_DIR": str(root / "zoo"),
        "LOUPE_DEFAULT_MODEL": MODEL, "LOUPE_MAX_TOKENS": "2048", "LOUPE_HUB_MODELS": "", "LOUPE_API_TOKEN": "",
    }
    with running_server(env, root / "server.log") as server:
        yield server.url


@pytest.fixture(scope="module")
def analysis(long_url):
    """The attention analysis of PROMPT: its id, tokens and head (LAYER, HEAD)'s exact weights (u16:
    weight * 65535, as served; weights: 0..1)."""
    found = httpx.post(f"{long_url}/api/analyses", json={"analysis": "attention", "model": MODEL, "text": PROMPT, "wait_s": 30}, timeout=60).json()
    deadline = time.monotonic() + 60
    while found["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        found = httpx.get(f"{long_url}/api/analyses/{found['id']}", timeout=30).json()
    assert found["status"] == "done", found
    tokens = found["result"]["tokens"]
    body = httpx.get(f"{long_url}/api/analyses/{found['id']}/attention?layer={LAYER}&head={HEAD}&format=u16", timeout=60).content
    u16 = np.frombuffer(body, "<u2").reshape(len(tokens), len(tokens)).astype(np.int64)  # [query_pos, key_pos]
    return {"id": found["id"], "tokens": tokens, "u16": u16, "weights": u16 / 65535}


@pytest.fixture
def new_long_page(browser, long_url):
    with page_maker(browser, long_url) as make:
        yield make


def drawn(page) -> dict:
    """The map once painted: its region, the labels on both axes ([position, token text or None]),
    its colour bar's scale and its pixels (uint8 [height, width, rgb])."""
    page.wait_for_selector(f"{MAP}[data-ready=true]")
    shown = page.evaluate(
        """() => {
          const canvas = document.querySelector("[data-testid=long-map]");
          const labels = (id) => [...document.querySelectorAll(`[data-testid=${id}] .long-map-label`)]
            .map((el) => [Number(el.dataset.pos), el.querySelector(".long-map-token")?.textContent ?? null]);
          const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
          let bytes = "";
          for (let i = 0; i < data.length; i += 0x8000) bytes += String.fromCharCode(...data.subarray(i, i + 0x8000));
          return { region: canvas.dataset.region.split(",").map(Number), queries: labels("long-map-queries"),
                   keys: labels("long-map-keys"), size: [canvas.height, canvas.width], pixels: btoa(bytes),
                   scale: document.querySelector("[data-testid=color-bar]").dataset.scale };
        }"""
    )
    shown["pixels"] = np.frombuffer(base64.b64decode(shown["pixels"]), np.uint8).reshape(*shown["size"], 4)[..., :3]
    return shown


def pooled(u16: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Adaptive max pooling as the tile endpoint cuts its blocks: cell r covers [floor(r n / rows), ceil((r + 1) n / rows))."""
    n, m = u16.shape
    by_row = np.stack([u16[(r * n) // rows : -(-(r + 1) * n // rows)].max(0) for r in range(rows)])
    return np.stack([by_row[:, (c * m) // cols : -(-(c + 1) * m // cols)].max(1) for c in range(cols)], 1)


def palette_index(u16: np.ndarray, scale: str) -> np.ndarray:
    """colormap.js: a weight's colour among 256, linear or log10 (1e-5 .. 1, below it the lowest)."""
    w = u16 / 65535
    if scale == "log":
        w = np.where(w < 1e-5, 0, np.minimum(1, (np.log10(np.maximum(w, 1e-30)) + 5) / 5))
    return np.floor(w * 255 + 0.5).astype(int)


def assert_cells(shown: dict, expected: np.ndarray, palette: np.ndarray, slack: int = 0) -> None:
    """Each cell's centre pixel has its palette colour (within `slack` steps of the scale)."""
    (height, width), (rows, cols) = shown["size"], expected.shape
    ys, xs = ((np.arange(rows) + 0.5) * height / rows).astype(int), ((np.arange(cols) + 0.5) * width / cols).astype(int)
    centres = shown["pixels"][ys][:, xs].astype(int)  # [rows, cols, rgb]
    near = [palette[np.clip(expected + d, 0, 255)] for d in range(-slack, slack + 1)]
    assert np.any([np.all(centres == colours, axis=-1) for colours in near], axis=0).all()


def at(page, q: float, k: float) -> tuple[float, float]:
    """The viewport point of (query, key) positions on the map as its region stands."""
    return tuple(
        page.evaluate(
            """([q, k]) => {
              const canvas = document.querySelector("[data-testid=long-map]");
              const [q0, q1, k0, k1] = canvas.dataset.region.split(",").map(Number);
              const box = canvas.getBoundingClientRect();
              return [box.left + ((k - k0) / (k1 - k0)) * box.width, box.top + ((q - q0) / (q1 - q0)) * box.height];
            }""",
            [q, k],
        )
    )


def readout(page, pattern: str) -> re.Match:
    text = wait_js(page, f"(() => {{ const t = document.querySelector('[data-testid=hover-readout]').textContent; return /{pattern}/.test(t) && t; }})()")
    return re.fullmatch(pattern, text)


def record_ready(page) -> None:
    """Log every data-ready value the map takes from now on (window.readyLog)."""
    page.evaluate(
        """() => {
          window.readyLog = [];
          window.readyWatch ??= new MutationObserver((changes) => changes.forEach((c) => window.readyLog.push(c.target.dataset.ready)));
          window.readyWatch.observe(document.querySelector("[data-testid=long-map]"), { attributes: true, attributeFilter: ["data-ready"] });
        }"""
    )


EXACT = r"query (\d+) (\S*) → key (\d+) (\S*): ([0-9.e+-]+)"


def test_a_long_map_zooms_to_labelled_tokens_hovers_exactly_and_reopens_from_its_link(new_long_page, analysis):
    tokens, weights = analysis["tokens"], analysis["weights"]
    n = len(tokens)
    assert 1500 <= n <= 2000
    page = new_long_page()
    page.goto(f"/?analysis={analysis['id']}&view=attention&layer={LAYER}&head={HEAD}")

    # The overview: the whole head max-pooled to one cell per canvas pixel, every pixel its cell's
    # colour; positions on the axes; no Plotly heatmap.
    overview = drawn(page)
    assert overview["region"] == [0, n, 0, n] and overview["size"][0] < n
    palette = np.array(page.evaluate("import('/js/colormap.js').then((m) => m.PALETTE)"))
    cells = pooled(analysis["u16"], *overview["size"])
    assert (overview["pixels"] == palette[palette_index(cells, "linear")]).all()
    assert page.locator("#pattern-plot").is_hidden() and page.locator("#pattern-plot .heatmaplayer").count() == 0
    assert all(token is None for _, token in overview["queries"] + overview["keys"]) and 4 <= len(overview["queries"]) <= 12
    assert page.evaluate("performance.getEntriesByName('loupe:long-map-drawn').length") == 1
    page.wait_for_selector(f"#token-view[data-ready^='{analysis['id']}/{LAYER}/{HEAD}/']")  # under 2,048 tokens: a token view too

    # Hover a strong pooled cell: its block, then the query and key whose weight is the block's maximum.
    rows = np.arange(len(cells))
    r, c = max(((r, c) for r in rows[len(rows) // 2 :] for c in range(r // 2) if cells[r, c] > 0.3 * 65535), key=lambda rc: rc[0] - rc[1])
    box = page.locator(MAP).bounding_box()
    page.mouse.move(box["x"] + c + 0.5, box["y"] + r + 0.5)
    pooled_line = readout(page, EXACT + r", max over (\d+)×(\d+) \(queries (\d+)–(\d+) × keys (\d+)–(\d+)\)")
    q, k = int(pooled_line[1]), int(pooled_line[3])
    qa, qb, ka, kb = (int(pooled_line[i]) for i in (8, 9, 10, 11))
    assert (qa, qb + 1) == ((r * n) // len(cells), -(-(r + 1) * n // len(cells)))  # cell r's block of queries
    assert (ka, kb + 1) == ((c * n) // len(cells), -(-(c + 1) * n // len(cells)))
    assert (int(pooled_line[6]), int(pooled_line[7])) == (qb - qa + 1, kb - ka + 1) > (1, 1)
    assert qa <= q <= qb and ka <= k <= kb and (pooled_line[2], pooled_line[4]) == (display(tokens[q]), display(tokens[k]))
    assert analysis["u16"][q, k] == cells[r, c] and abs(float(pooled_line[5]) - weights[q, k]) <= 1e-3

    # Drag a box around ~30 x 30 tokens below the diagonal: that region, each token's text as a label.
    target = (1200, 1230, 1150, 1180)
    page.mouse.move(*at(page, target[0] + 0.3, target[2] + 0.3))
    page.mouse.down()
    page.mouse.move(*at(page, target[1] - 0.3, target[3] - 0.3), steps=4)
    page.mouse.up()
    page.wait_for_selector(f"{MAP}:not([data-region='0,{n},0,{n}'])")
    zoomed = drawn(page)
    q0, q1, k0, k1 = zoomed["region"]
    assert all(abs(a - b) <= 2 for a, b in zip(zoomed["region"], target)) and q1 - q0 <= 40 and k1 - k0 <= 40
    assert zoomed["queries"] == [[pos, display(tokens[pos])] for pos in range(q0, q1)]
    assert zoomed["keys"] == [[pos, display(tokens[pos])] for pos in range(k0, k1)]
    assert url_state(page.url)["zoom"] == f"{q0},{q1},{k0},{k1}"
    assert_cells(zoomed, palette_index(analysis["u16"][q0:q1, k0:k1], "linear"), palette)

    # Hover the region's strongest cell: its own tokens and its exact weight.
    block = weights[q0:q1, k0:k1]
    q, k = (int(i) for i in np.unravel_index(block.argmax(), block.shape))
    q, k = q + q0, k + k0
    page.mouse.move(*at(page, q + 0.5, k + 0.5))
    exact = readout(page, EXACT + "$")
    assert (int(exact[1]), exact[2], int(exact[3]), exact[4]) == (q, display(tokens[q]), k, display(tokens[k]))
    assert abs(float(exact[5]) - weights[q, k]) <= 1e-3 and weights[q, k] > 0.05

    # The head's export menu saves the map as PNG, at the canvas' own pixels.
    page.click("[data-testid=export-head] summary")
    with page.expect_download() as download:
        page.click("[data-testid=export-head] [data-export=png]")
    png = open(download.value.path(), "rb").read()
    assert download.value.suggested_filename == f"loupe-local_llama2k-attention-L{LAYER}H{HEAD}.png"
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == tuple(zoomed["size"][::-1])

    # Colour scales: each one redraws (not ready, then ready) in its own colours; row fetches norm=row
    # (divided by the row's maximum before 16-bit rounding: a step of slack).
    u16 = analysis["u16"]
    row_max = u16.max(1, keepdims=True)
    expected = {"log": palette_index(u16[q0:q1, k0:k1], "log"), "row": palette_index((u16 * 65535 / row_max)[q0:q1, k0:k1], "linear")}
    shown = [zoomed["pixels"]]
    for scale in ("log", "row"):
        record_ready(page)
        page.select_option("[data-testid=color-scale]", scale)
        wait_js(page, "window.readyLog.join() === 'false,true'")
        now = drawn(page)
        assert now["scale"] == scale and now["region"] == zoomed["region"] and url_state(page.url)["color"] == scale
        assert_cells(now, expected[scale], palette, slack=1)
        assert not any((now["pixels"] == before).all() for before in shown)
        shown.append(now["pixels"])
    assert any("norm=row" in url and f"q0={q0}" in url for _, url in page.requests)
    # per row: the hovered weight over its row's maximum (16-bit weights: within a step of that max)
    page.mouse.move(*at(page, q + 1.5, k + 0.5))  # off and back on: a pointer that stays put reports no move
    page.mouse.move(*at(page, q + 0.5, k + 0.5))
    row = readout(page, EXACT + " of its row's max$")
    assert abs(float(row[5]) - weights[q, k] / weights[q].max()) <= 1e-3 + 1 / (65535 * weights[q].max())

    # The share link reopens the same zoom and colour scale.
    link = page.url
    fresh = new_long_page()
    fresh.goto(link)
    again = drawn(fresh)
    assert (again["region"], again["queries"], again["scale"]) == (zoomed["region"], zoomed["queries"], "row")
    assert fresh.input_value("[data-testid=color-scale]") == "row"

    # Double-click: the whole head again, and the zoom leaves the URL.
    fresh.dblclick(MAP)
    fresh.wait_for_selector(f"{MAP}[data-ready=true][data-region='0,{n},0,{n}']")
    assert "zoom" not in url_state(fresh.url)


def view_tiles(page, width: int) -> list[list[int]]:
    """The regions of the map tiles the page fetched, in order: tiles at the canvas' width (a hover's
    exact look-up fetches a tile at its block's size)."""
    found = [parse_qs(urlparse(url).query) for _, url in page.requests if "/attention/tile?" in url]
    return [[int(q[name][0]) for name in ("q0", "q1", "k0", "k1")] for q in found if q["size"] == [str(width)]]


def test_the_wheel_zooms_about_the_pointer_and_a_shift_or_middle_drag_pans_fetching_one_tile_each(new_long_page, analysis):
    n = len(analysis["tokens"])
    page = new_long_page()
    page.goto(f"/?analysis={analysis['id']}&view=attention&layer={LAYER}&head={HEAD}")
    width = drawn(page)["size"][1]
    side = page.locator(MAP).bounding_box()["width"]
    assert "Shift-drag" in page.text_content("[data-testid=hover-readout]")

    # A shift-drag over the whole head has nowhere to pan to: the map stays as it is, unboxed.
    page.keyboard.down("Shift")
    page.mouse.move(*at(page, 600, 400))
    page.mouse.down()
    page.mouse.move(*at(page, 900, 700), steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    assert page.get_attribute(MAP, "data-ready") == "true" and page.get_attribute(MAP, "data-region") == f"0,{n},0,{n}"
    assert page.locator("[data-role=box]").is_hidden()

    # Three wheel notches in over (1200, 1100): that point stays under the pointer, each side 1.25^3
    # shorter, and only the burst's last region is fetched.
    before = len(view_tiles(page, width))
    q, k = 1200.5, 1100.5
    x, y = at(page, q, k)
    page.mouse.move(x, y)
    # one burst, dispatched in one task: on a loaded machine three separate wheel calls may land
    # further apart than the debounce, which is not what this checks
    page.evaluate(
        """([x, y]) => {
          const canvas = document.querySelector("[data-testid=long-map]");
          for (let i = 0; i < 3; i++) {
            canvas.dispatchEvent(new WheelEvent("wheel", { deltaY: -100, clientX: x, clientY: y, bubbles: true, cancelable: true }));
          }
        }""",
        [x, y],
    )
    page.wait_for_selector(f"{MAP}:not([data-region='0,{n},0,{n}'])")
    q0, q1, k0, k1 = region = drawn(page)["region"]
    assert abs((q1 - q0) - n / 1.25**3) <= 2 and abs((k1 - k0) - n / 1.25**3) <= 2
    assert abs((q - q0) / (q1 - q0) - q / n) < 2 / (q1 - q0) and abs((k - k0) / (k1 - k0) - k / n) < 2 / (k1 - k0)
    time.sleep(0.4)  # past the wheel's rest: no further fetch
    assert view_tiles(page, width)[before:] == [region] and url_state(page.url)["zoom"] == ",".join(map(str, region))

    # Shift-drag 150 px left and 100 px down: the region moves that far right in keys and up in
    # queries, at the same size; one tile, for where the drag let go.
    before = len(view_tiles(page, width))
    x, y = at(page, 1100, 1000)
    page.keyboard.down("Shift")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 150, y + 100, steps=6)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_selector(f"{MAP}:not([data-region='{','.join(map(str, region))}'])")
    panned = drawn(page)["region"]
    dq, dk = -100 / side * (q1 - q0), 150 / side * (k1 - k0)
    assert abs(panned[0] - (q0 + dq)) <= 1 and abs(panned[2] - (k0 + dk)) <= 1
    assert (panned[1] - panned[0], panned[3] - panned[2]) == (q1 - q0, k1 - k0)
    time.sleep(0.4)
    assert view_tiles(page, width)[before:] == [panned] and url_state(page.url)["zoom"] == ",".join(map(str, panned))

    # A middle-button drag far up and left stops at the head's last query and key.
    x, y = at(page, 1000, 1000)
    page.mouse.move(x, y)
    page.mouse.down(button="middle")
    page.mouse.move(x - 2 * side, y - 2 * side, steps=4)
    page.mouse.up(button="middle")
    page.wait_for_selector(f"{MAP}[data-ready=true][data-region='{n - (q1 - q0)},{n},{n - (k1 - k0)},{n}']")

    # Wheel far out: the whole head again, and the zoom leaves the URL.
    page.mouse.move(*at(page, 1500, 1500))
    for _ in range(6):
        page.mouse.wheel(0, 100)
    page.wait_for_selector(f"{MAP}[data-ready=true][data-region='0,{n},0,{n}']")
    wait_js(page, "!new URLSearchParams(location.search).has('zoom')")
