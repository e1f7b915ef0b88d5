"""Share-link paint: headless Chromium opens the permalink of a cached analysis until the head's
heatmap (past 512 tokens, its long map) is drawn, against opening the bare page until its model list
is filled (the page floor)."""


from .context import Bench, log
from .rows import Row, interleaved, median, pending

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PAINT_TARGET = 2.0
TIMEOUT_MS = 90_000

# The head view's Plotly heatmap has drawn its image (and, where the page marks it, is ready).
_HEATMAP_DRAWN = """() => {
  const plot = document.querySelector('[data-testid="pattern-plot"], #pattern-plot');
  if (!plot || (plot.dataset.ready !== undefined && plot.dataset.ready !== "true")) return false;
  return plot.querySelector(".heatmaplayer image, .heatmaplayer .hm") !== null;
}"""
# Past 512 tokens the head is drawn on a canvas, which marks itself ready once its overview is painted.
LONG_MAP_DRAWN = """() => {
  const map = document.querySelector('[data-testid="long-map"]');
  return map !== null && map.dataset.ready === "true";
}"""
LONG_MAP_FROM = 513
_SHELL_READY = "() => document.querySelector('#model-select option') !== null"
# When each big resource had arrived, in seconds since navigation start: where a slow paint went.
_MILESTONES = """() => {
  const found = {};
  for (const entry of performance.getEntriesByType("resource")) {
    const path = new URL(entry.name).pathname;
    const key = path.includes("/vendor/plotly") ? "plotly" : path.endsWith("/attention") ? "pattern"
      : path.endsWith("/attention/tile") ? "tile" : path.endsWith("/thumbnails") ? "thumbnails" : null;
    if (key) found[key] = entry.responseEnd / 1000;
  }
  for (const mark of performance.getEntriesByType("mark")) {
    if (mark.name.startsWith("loupe:")) found[mark.name.slice(6)] = mark.startTime / 1000;
  }
  found.drawn = performance.now() / 1000;
  return found;
}"""


def share_link_paint(bench: Bench, url: str, analysis_id: str, n_tokens: int | None = None, prefix: str = "") -> list[Row]:
    """Seconds from navigation to the drawn head (layer 0, head 0) of the permalink of analysis_id,
    a T = n_tokens (default bench.long) attention analysis, against the page shell's."""
    n_tokens = bench.long if n_tokens is None else n_tokens
    name = f"{prefix}share link paint T={n_tokens}"
    drawn = LONG_MAP_DRAWN if n_tokens >= LONG_MAP_FROM else _HEATMAP_DRAWN
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        return [pending(name, "s", PAINT_TARGET, "value", "playwright is not installed")]
    permalink = f"{url}/?analysis={analysis_id}&view=attention&layer=0&head=0"
    milestones: list[dict] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:

            def visit(target: str, predicate: str) -> None:
                context = browser.new_context(viewport={"width": 1440, "height": 1000})  # a cold HTTP cache
                try:
                    page = context.new_page()
                    page.goto(target, wait_until="commit", timeout=TIMEOUT_MS)
                    try:
                        page.wait_for_function(predicate, timeout=TIMEOUT_MS, polling="raf")
                    finally:
                        if predicate is drawn:
                            milestones.append(page.evaluate(_MILESTONES))
                finally:
                    context.close()

            reps = bench.repetitions(2)
            log(f"share link paint: {reps} repetitions")
            try:
                times = interleaved(
                    {"shell": lambda: visit(f"{url}/", _SHELL_READY), "paint": lambda: visit(permalink, drawn)},
                    reps,
                    warmup=0,
                )
            except PlaywrightError as exc:
                seen = "; ".join(f"{k} {v:.2f} s" for k, v in milestones[-1].items()) if milestones else "nothing"
                if not milestones or not {"pattern", "tile"} & milestones[-1].keys():
                    why = f"no heatmap within {TIMEOUT_MS // 1000} s and no pattern requested ({type(exc).__name__}; {seen})"
                    return [pending(name, "s", PAINT_TARGET, "value", why)]
                return [Row(name, TIMEOUT_MS / 1000, None, "s", PAINT_TARGET, "value",
                            note=f"not drawn within {TIMEOUT_MS // 1000} s (value is that bound); in the page: {seen}")]
        finally:
            browser.close()
    arrived = {key: median([m[key] for m in milestones if key in m]) for key in milestones[0]}
    when = ", ".join(f"{key} {value:.2f} s" for key, value in sorted(arrived.items(), key=lambda kv: kv[1]))
    return [
        Row(name, median(times["paint"]), median(times["shell"]), "s", PAINT_TARGET, "value",
            baseline_name="page shell", extra={"in the page, since navigation start": when})
    ]
