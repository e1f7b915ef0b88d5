// One head's attention pattern at long T, on a canvas: past LONG_TOKENS tokens a Plotly heatmap of
// T x T cells cannot draw in time, so the server max-pools the pattern to the canvas' pixels (the
// tile endpoint) and every zoom fetches its region at screen resolution again. Token labels once a
// region is small enough to read them; a hover readout that names the query and key tokens at any
// zoom; three colour scales. Box, wheel and pan move the region; while they move it the image drawn
// last is stretched or shifted at once, and the new region's tile is fetched once they stop. The
// zoom region and colour scale are the page's URL state (onChange).

import * as api from "./api.js";
import { colorBar, SCALE_LABELS, SCALES, table } from "./colormap.js";
import { displayToken } from "./plotting.js";

/** Past this many tokens a head's pattern is drawn here, not as a Plotly heatmap (heatmaps.js). */
export const LONG_TOKENS = 512;
export const isLong = (tokens) => tokens.length > LONG_TOKENS;
/** Up to this many tokens a long head's whole pattern is still fetched, for the token view beside
 * the map (the server's limit for a whole head as JSON too); past it the map is all there is. */
export const WHOLE_HEAD_TOKENS = 2048;

const MAX_TILE = 2048; // the tile endpoint's largest size
const MIN_LABEL_PX = 10; // an axis shows every token's text once each gets this many pixels
const AXIS_PX = 104; // the strip of query labels left of the map (and of key labels below it)
const MAX_SIDE = 960;
const MIN_BOX_PX = 4; // a smaller drag is a click, not a zoom
const HOVER_DELAY_MS = 60; // a pooled cell's own maximum is fetched once the pointer rests
const WHEEL_STEP = 1.25; // one wheel notch zooms by this factor
const MIN_SPAN = 8; // the wheel zooms in no further than this many positions a side
const SETTLE_MS = 180; // a wheel burst or pan fetches its region's tile once this long has passed without another
const IDLE = "Hover a cell for its query and key tokens. Drag a box or turn the wheel to zoom; Shift-drag (or middle-drag) to pan; double-click or Reset to see the whole head.";

const MARKUP = `
  <div class="long-map-tools">
    <label>Colour <select data-testid="color-scale" aria-label="Colour scale"></select></label>
    <button type="button" class="secondary" data-role="reset" data-testid="long-map-reset">Reset zoom</button>
    <div class="color-bar" data-role="bar" data-testid="color-bar"></div>
  </div>
  <div class="long-map-grid">
    <div class="long-map-queries" data-role="queries" data-testid="long-map-queries"></div>
    <div class="long-map-stage" data-role="stage">
      <canvas data-testid="long-map" data-ready="false" role="img" aria-label="Attention pattern: query positions down, key positions across"></canvas>
      <div class="long-map-box" data-role="box" hidden></div>
    </div>
    <span class="long-map-title">query ↓ · key →</span>
    <div class="long-map-keys" data-role="keys" data-testid="long-map-keys"></div>
  </div>
  <p class="hover-readout" data-testid="hover-readout"></p>
  <p class="hint">Past ${LONG_TOKENS} tokens there is no iteration comparison, and past ${WHOLE_HEAD_TOKENS.toLocaleString("en")}
    no token view: each would need the whole head.</p>`;

let marked = false; // performance mark of the first overview painted (bench/paint.py reads loupe:*)

/** Build the viewer in `el` once. onChange({zoom, color}) reports a view the user chose (zoom:
 * [q0, q1, k0, k1] or null for the whole head); onError(err) shows a failed fetch. */
export function mount(el, { onChange, onError }) {
  el.innerHTML = MARKUP; // static markup: no data goes in here
  const part = (role) => el.querySelector(`[data-role=${role}]`);
  const v = {
    el, onChange, onError,
    canvas: el.querySelector("canvas"), stage: part("stage"), box: part("box"), bar: part("bar"),
    queries: part("queries"), keys: part("keys"), readout: el.querySelector(".hover-readout"),
    select: el.querySelector("[data-testid=color-scale]"),
    head: null, // {id, layer, head, iteration, tokens}: what is shown
    zoom: null, scale: "linear", side: 0,
    drawn: null, // {key, headKey, tile, image, region}: what the canvas shows
    controller: null, hoverController: null, hoverTimer: null, drag: null,
    pan: null, // {from: [x, y], region}: where a pan started
    moving: null, settleTimer: null, // the region a wheel or pan is moving to, not yet fetched (fractional)
  };
  el._longMap = v;
  v.select.append(...SCALES.map((scale) => new Option(SCALE_LABELS[scale], scale)));
  v.select.addEventListener("change", () => choose(v, { color: v.select.value }));
  part("reset").addEventListener("click", () => choose(v, { zoom: null }));
  v.stage.addEventListener("dblclick", () => choose(v, { zoom: null }));
  bindPointer(v);
  new ResizeObserver(() => {
    const shown = v.head && el.offsetParent !== null; // hidden, it has no width to fit
    if (shown && sideOf(v) !== v.side) paint(v).catch(onError);
  }).observe(el);
}

/** Show one head at a view: `zoom` a region [q0, q1, k0, k1] (null: the whole head), `color` a
 * scale. Resolves once painted (or superseded by a newer view). `name` names the PNG. */
export function show(el, { id, layer, head, iteration, tokens, zoom, color, name }) {
  const v = el._longMap;
  settle(v);
  v.head = { id, layer, head, iteration, tokens };
  v.zoom = validZoom(zoom, tokens.length);
  v.scale = SCALES.includes(color) ? color : "linear";
  v.select.value = v.scale;
  Object.assign(v.canvas.dataset, { analysis: id, layer, head, iteration, fileName: name });
  v.readout.textContent = IDLE;
  return paint(v);
}

function validZoom(zoom, n) {
  if (!zoom) return null;
  const [q0, q1, k0, k1] = zoom;
  const whole = q0 === 0 && k0 === 0 && q1 === n && k1 === n;
  return q0 < q1 && k0 < k1 && q1 <= n && k1 <= n && !whole ? zoom : null;
}

const regionOf = (v) => v.zoom ?? [0, v.head.tokens.length, 0, v.head.tokens.length];

/** A view the user chose: reported to the page (its URL), then painted. */
function choose(v, { zoom = v.zoom, color = v.scale }) {
  if (!v.head) return;
  settle(v);
  v.zoom = validZoom(zoom, v.head.tokens.length);
  v.scale = color;
  v.onChange({ zoom: v.zoom, color: v.scale });
  paint(v).catch(v.onError);
}

/** The canvas' side in CSS pixels: the panel's width less the label strip. */
function sideOf(v) {
  return Math.max(160, Math.min(MAX_SIDE, v.el.clientWidth - AXIS_PX));
}

/** Paint the current view: the previous image stretched to the new region at once, the labels of
 * the new region, then the region's tile at screen resolution once it arrives. */
async function paint(v) {
  const { id, layer, head, iteration, tokens } = v.head;
  const region = regionOf(v);
  const side = sideOf(v);
  if (side !== v.side) {
    v.side = side;
    v.canvas.style.width = v.canvas.style.height = `${side}px`;
    v.stage.style.width = v.stage.style.height = `${side}px`;
    v.canvas.width = v.canvas.height = Math.round(side * (window.devicePixelRatio || 1));
  }
  const size = Math.min(MAX_TILE, v.canvas.width);
  const norm = v.scale === "row" ? "row" : "none";
  const headKey = headKeyOf(v);
  const key = [headKey, region, size, norm, v.scale, v.canvas.width].join("/");
  v.canvas.dataset.region = region.join(",");
  labelAxes(v, region, tokens);
  if (v.bar.dataset.scale !== v.scale) colorBar(v.bar, v.scale);
  v.controller?.abort(); // whatever view was on its way is not this one
  if (v.drawn?.key === key) {
    v.canvas.dataset.ready = "true";
    return;
  }
  const controller = (v.controller = new AbortController());
  v.canvas.dataset.ready = "false";
  const ctx = v.canvas.getContext("2d");
  ctx.clearRect(0, 0, v.canvas.width, v.canvas.height);
  if (v.drawn?.headKey === headKey) place(v, v.drawn.image, v.drawn.region, region); // stretched while it loads
  let tile;
  try {
    tile = await api.getTile(id, { layer, head, iteration, region, size, norm }, { signal: controller.signal });
  } catch (err) {
    if (err.name === "AbortError") return;
    throw err;
  }
  if (controller !== v.controller) return; // a newer view asked meanwhile
  const image = colored(tile, v.scale);
  v.drawn = { key, headKey, tile, image, region, norm };
  ctx.clearRect(0, 0, v.canvas.width, v.canvas.height);
  place(v, image, region, region);
  v.canvas.dataset.ready = "true";
  if (!marked && !v.zoom) {
    marked = true;
    performance.mark("loupe:long-map-drawn");
  }
}

const headKeyOf = (v) => [v.head.id, v.head.layer, v.head.head, v.head.iteration].join("/");

/** Show `region` at once with the image drawn last (stretched or shifted to it) and its labels; its
 * own tile is not fetched (the map is not ready) until the move rests (rest()). */
function preview(v, region) {
  v.controller?.abort();
  cancelHover(v);
  v.canvas.dataset.ready = "false";
  v.canvas.dataset.region = region.join(",");
  labelAxes(v, region, v.head.tokens);
  const ctx = v.canvas.getContext("2d");
  ctx.clearRect(0, 0, v.canvas.width, v.canvas.height);
  if (v.drawn?.headKey === headKeyOf(v)) place(v, v.drawn.image, v.drawn.region, region);
}

/** A tile as an image of rows x cols pixels, one per cell, coloured under `scale`. */
function colored({ values, rows, cols }, scale) {
  const image = Object.assign(document.createElement("canvas"), { width: cols, height: rows });
  const data = new ImageData(cols, rows);
  const pixels = new Uint32Array(data.data.buffer);
  const colors = table(scale);
  for (let i = 0; i < values.length; i++) pixels[i] = colors[values[i]];
  image.getContext("2d").putImageData(data, 0, 0);
  return image;
}

/** Draw `image` (showing region `from`) where `from` lies on a canvas showing region `to`. */
function place(v, image, from, to) {
  const [q0, q1, k0, k1] = to;
  const { width, height } = v.canvas;
  const ctx = v.canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false; // a cell is a block of its own colour, never blended with its neighbours
  const x = ((from[2] - k0) / (k1 - k0)) * width;
  const y = ((from[0] - q0) / (q1 - q0)) * height;
  ctx.drawImage(image, x, y, ((from[3] - from[2]) / (k1 - k0)) * width, ((from[1] - from[0]) / (q1 - q0)) * height);
}

// ---- axes ------------------------------------------------------------------------------------

/** Each axis: every token's text when the region is small enough to read them, else positions. */
function labelAxes(v, [q0, q1, k0, k1], tokens) {
  labelAxis(v.queries, q0, q1, v.side, tokens);
  labelAxis(v.keys, k0, k1, v.side, tokens);
}

function labelAxis(strip, lo, hi, side, tokens) {
  const cell = side / (hi - lo); // CSS pixels per position
  const labels = [];
  if (cell >= MIN_LABEL_PX) {
    for (let pos = lo; pos < hi; pos++) labels.push(label(pos, tokens[pos], (pos - lo + 0.5) * cell));
  } else {
    const step = niceStep((hi - lo) / 8);
    for (let pos = Math.ceil(lo / step) * step; pos < hi; pos += step) labels.push(label(pos, null, (pos - lo + 0.5) * cell));
  }
  strip.replaceChildren(...labels);
  strip.dataset.labels = cell >= MIN_LABEL_PX ? "tokens" : "positions";
  strip.style.setProperty("--side", `${side}px`);
  strip.style.setProperty("--font", `${cell >= MIN_LABEL_PX ? Math.min(11, Math.floor(cell) - 1) : 10}px`);
}

/** One label at `at` pixels along its axis: the token as text (never HTML) and its position. */
function label(pos, token, at) {
  const el = document.createElement("span");
  el.className = "long-map-label";
  el.dataset.pos = pos;
  el.style.setProperty("--at", `${at}px`);
  if (token !== null) el.append(Object.assign(document.createElement("span"), { className: "long-map-token", textContent: displayToken(token) }));
  el.append(Object.assign(document.createElement("span"), { className: "pos", textContent: String(pos) }));
  return el;
}

/** 1, 2 or 5 times a power of ten, at least `raw`. */
function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(Math.max(1, raw)));
  return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= raw);
}

// ---- pointer: zoom box, wheel, pan and hover -------------------------------------------------

function bindPointer(v) {
  const point = (event) => {
    const rect = v.canvas.getBoundingClientRect();
    return [Math.min(Math.max(event.clientX - rect.left, 0), rect.width), Math.min(Math.max(event.clientY - rect.top, 0), rect.height)];
  };
  v.stage.addEventListener("pointerdown", (event) => {
    if (!v.head || (event.button !== 0 && event.button !== 1)) return;
    const region = v.moving ?? regionOf(v);
    if (event.button === 1 || event.shiftKey) {
      event.preventDefault(); // no middle-button autoscroll, no text selection
      if (isWhole(v, region)) return; // the whole head has nowhere to pan to
      v.pan = { from: point(event), region };
      v.stage.classList.add("panning");
    } else {
      v.drag = point(event);
    }
    v.stage.setPointerCapture(event.pointerId);
  });
  v.stage.addEventListener("pointermove", (event) => {
    const [x, y] = point(event);
    if (v.pan) return panTo(v, x, y);
    if (!v.drag) return hover(v, x, y);
    const [x0, y0] = v.drag;
    Object.assign(v.box.style, { left: `${Math.min(x, x0)}px`, top: `${Math.min(y, y0)}px`, width: `${Math.abs(x - x0)}px`, height: `${Math.abs(y - y0)}px` });
    v.box.hidden = false;
  });
  const endPan = () => {
    v.pan = null;
    v.stage.classList.remove("panning");
    if (v.moving) rest(v);
  };
  v.stage.addEventListener("pointerup", (event) => {
    if (v.pan) return endPan();
    if (!v.drag) return;
    const [[x0, y0], [x1, y1]] = [v.drag, point(event)];
    v.drag = null;
    v.box.hidden = true;
    if (Math.abs(x1 - x0) < MIN_BOX_PX || Math.abs(y1 - y0) < MIN_BOX_PX) return;
    const [q0, q1, k0, k1] = v.moving ?? regionOf(v);
    const [qa, qb] = span(q0, q1, Math.min(y0, y1) / v.side, Math.max(y0, y1) / v.side);
    const [ka, kb] = span(k0, k1, Math.min(x0, x1) / v.side, Math.max(x0, x1) / v.side);
    choose(v, { zoom: [qa, qb, ka, kb] });
  });
  v.stage.addEventListener("pointercancel", endPan);
  v.stage.addEventListener("pointerleave", () => {
    if (v.drag || v.pan) return;
    cancelHover(v);
    v.readout.textContent = IDLE;
  });
  // Only a wheel turned over the canvas is the map's: anywhere else the page scrolls as usual.
  v.canvas.addEventListener("wheel", (event) => {
    if (!v.head) return;
    event.preventDefault();
    if (v.pan || v.drag) return; // one gesture at a time
    const notches = event.deltaY / [100, 3, 1][event.deltaMode]; // pixels, lines or pages per notch
    const [x, y] = point(event);
    wheelZoom(v, WHEEL_STEP ** notches, x / v.side, y / v.side);
  }, { passive: false });
}

const isWhole = (v, [q0, q1, k0, k1]) => q0 <= 0 && k0 <= 0 && q1 >= v.head.tokens.length && k1 >= v.head.tokens.length;

/** Scale the region by `factor` (over 1: out) about the point at fractions (fx, fy) of the canvas,
 * which stays over the same positions: each side between MIN_SPAN positions and the whole head. */
function wheelZoom(v, factor, fx, fy) {
  const n = v.head.tokens.length;
  const [q0, q1, k0, k1] = v.moving ?? regionOf(v);
  const scaled = (lo, hi, f) => {
    const width = Math.min(n, Math.max(Math.min(hi - lo, MIN_SPAN), (hi - lo) * factor)); // never narrower by a wheel past MIN_SPAN
    return within(lo + f * (hi - lo) - f * width, width, n);
  };
  move(v, [...scaled(q0, q1, fy), ...scaled(k0, k1, fx)]);
}

/** Shift the region a pan started from by the pointer's path since, kept inside the head. */
function panTo(v, x, y) {
  const n = v.head.tokens.length;
  const { from: [x0, y0], region: [q0, q1, k0, k1] } = v.pan;
  const dq = ((y0 - y) / v.side) * (q1 - q0);
  const dk = ((x0 - x) / v.side) * (k1 - k0);
  move(v, [...within(q0 + dq, q1 - q0, n), ...within(k0 + dk, k1 - k0, n)]);
}

/** [lo, hi] of `width` positions from `lo`, moved back inside 0..n. */
function within(lo, width, n) {
  const start = Math.min(n - width, Math.max(0, lo));
  return [start, start + width];
}

/** A wheel or pan moved the region to `moving` (fractional positions): show it now, in whole
 * positions, and fetch nothing until it rests. */
function move(v, moving) {
  v.moving = moving;
  preview(v, rounded(moving));
  clearTimeout(v.settleTimer);
  if (!v.pan) rest(v); // a pan rests when it is let go
}

/** Choose the region moved to, fetching its tile, unless it moves again within SETTLE_MS. */
function rest(v) {
  clearTimeout(v.settleTimer);
  v.settleTimer = setTimeout(() => choose(v, { zoom: rounded(v.moving) }), SETTLE_MS);
}

/** A fractional region in whole positions, at least one a side. */
function rounded(region) {
  const [q0, q1, k0, k1] = region.map(Math.round);
  return [q0, Math.max(q0 + 1, q1), k0, Math.max(k0 + 1, k1)];
}

/** Drop a wheel or pan's region not yet chosen: another view replaces it. */
function settle(v) {
  clearTimeout(v.settleTimer);
  v.moving = null;
}

/** The positions a box from fraction a to b of an axis showing lo..hi covers: at least one. */
function span(lo, hi, a, b) {
  const start = Math.min(hi - 1, lo + Math.floor(a * (hi - lo)));
  return [start, Math.max(start + 1, Math.min(hi, lo + Math.ceil(b * (hi - lo))))];
}

/** The positions cell `i` of `cells` over lo..hi covers (the server's adaptive max-pool bins). */
function bin(lo, hi, cells, i) {
  const n = hi - lo;
  return [lo + Math.floor((i * n) / cells), lo + Math.ceil(((i + 1) * n) / cells)];
}

const weightText = (w) => (w === 0 || w >= 0.001 ? w.toFixed(3) : w.toExponential(2));

function cancelHover(v) {
  clearTimeout(v.hoverTimer);
  v.hoverController?.abort();
  v.hoverController = null;
}

/** Name the cell under (x, y): exact cells at once; a pooled cell as its block and maximum, then,
 * once the pointer rests, the query and key whose weight that maximum is. */
function hover(v, x, y) {
  cancelHover(v);
  const drawn = v.drawn;
  if (!drawn || v.canvas.dataset.ready !== "true") return;
  const { values, rows, cols, region: [q0, q1, k0, k1] } = drawn.tile;
  const r = Math.min(rows - 1, Math.floor((y / v.side) * rows));
  const c = Math.min(cols - 1, Math.floor((x / v.side) * cols));
  const [qa, qb] = bin(q0, q1, rows, r);
  const [ka, kb] = bin(k0, k1, cols, c);
  const tokens = v.head.tokens;
  const of = drawn.norm === "row" ? " of its row's max" : "";
  const line = (q, k, u) => `query ${q} ${displayToken(tokens[q])} → key ${k} ${displayToken(tokens[k])}: ${weightText(u / 65535)}${of}`;
  if (qb - qa === 1 && kb - ka === 1) {
    v.readout.textContent = line(qa, ka, values[r * cols + c]);
    return;
  }
  const block = `queries ${qa}–${qb - 1} × keys ${ka}–${kb - 1}`;
  v.readout.textContent = `${block}: ${weightText(values[r * cols + c] / 65535)}${of}, max over ${qb - qa}×${kb - ka}`;
  const { id, layer, head, iteration } = v.head;
  const controller = (v.hoverController = new AbortController());
  v.hoverTimer = setTimeout(async () => {
    try {
      const region = [qa, qb, ka, kb];
      const exact = await api.getTile(id, { layer, head, iteration, region, size: Math.max(qb - qa, kb - ka), norm: drawn.norm },
        { signal: controller.signal, keep: false });
      if (controller !== v.hoverController) return;
      let best = 0;
      for (let i = 1; i < exact.values.length; i++) if (exact.values[i] > exact.values[best]) best = i;
      const [q, k] = [qa + Math.floor(best / exact.cols), ka + (best % exact.cols)];
      v.readout.textContent = `${line(q, k, exact.values[best])}, max over ${qb - qa}×${kb - ka} (${block})`;
    } catch (err) {
      if (err.name !== "AbortError") v.onError(err);
    }
  }, HOVER_DELAY_MS);
}
