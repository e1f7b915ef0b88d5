// Colour of canvas-drawn patterns (longmap.js, thumbnails.js): the page's BLUES scale as a 256-colour
// palette, so canvases match the Plotly heatmaps; for a long map, a table per colour scale from a tile's uint16 value (weight * 65535) straight to packed RGBA, and
// the colour bar that says what a colour means.

import { BLUES } from "./plotting.js";

/** The colour scales: the weight; log10 of the weight; the weight over its query row's maximum
 * (the tile endpoint's norm=row). Long-context attention is mostly tiny values: log and row show them. */
export const SCALES = ["linear", "log", "row"];
export const SCALE_LABELS = { linear: "linear", log: "log", row: "per row (÷ row max)" };
// Below the uint16 step (1/65535 = 1.5e-5) a stored weight is 0: log10 runs from -5 to 0, and 0 is white.
const DECADES = 5;
export const LOG_FLOOR = 10 ** -DECADES;
const N_COLORS = 256;

/** [N_COLORS] RGB triples interpolated between the stops of a Plotly colorscale. */
function palette(stops) {
  const hex = (color) => [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  const colors = [];
  for (let i = 0; i < N_COLORS; i++) {
    const t = i / (N_COLORS - 1);
    let s = 1;
    while (s < stops.length - 1 && stops[s][0] < t) s++;
    const [t0, c0] = [stops[s - 1][0], hex(stops[s - 1][1])];
    const [t1, c1] = [stops[s][0], hex(stops[s][1])];
    const f = (t - t0) / (t1 - t0);
    colors.push(c0.map((c, j) => Math.round(c + f * (c1[j] - c))));
  }
  return colors;
}
/** [256] RGB: the BLUES colour of 0..1 in 256 steps. */
export const PALETTE = palette(BLUES);

/** Where a weight in 0..1 falls on the colour bar (0..1) under `scale`. */
export function position(scale, weight) {
  if (scale !== "log") return weight;
  return weight < LOG_FLOOR ? 0 : Math.min(1, (Math.log10(weight) + DECADES) / DECADES);
}

const tables = new Map();

/** Uint32Array[65536]: a tile's uint16 value -> its colour as one ImageData pixel (RGBA bytes in
 * memory order, read as a little-endian uint32, which every browser platform is). */
export function table(scale) {
  if (!tables.has(scale)) {
    const packed = PALETTE.map(([r, g, b]) => ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0);
    const out = new Uint32Array(65536);
    for (let u = 0; u < 65536; u++) out[u] = packed[Math.round(position(scale, u / 65535) * (N_COLORS - 1))];
    tables.set(scale, out);
  }
  return tables.get(scale);
}

const TICKS = {
  linear: { title: "weight", ticks: [[0, "0"], [0.5, "0.5"], [1, "1"]] },
  log: { title: "weight (log10)", ticks: [0, 1, 2, 3, 4, 5].map((d) => [d / DECADES, d === DECADES ? "1" : `1e-${DECADES - d}`]) },
  row: { title: "weight ÷ its row's max", ticks: [[0, "0"], [0.5, "0.5"], [1, "1"]] },
};

/** Draw the colour bar of `scale` into `el` (a gradient canvas and its tick labels, as text). */
export function colorBar(el, scale) {
  const { title, ticks } = TICKS[scale];
  const canvas = document.createElement("canvas");
  canvas.width = N_COLORS;
  canvas.height = 1;
  const image = new ImageData(N_COLORS, 1);
  PALETTE.forEach(([r, g, b], i) => image.data.set([r, g, b, 255], 4 * i));
  canvas.getContext("2d").putImageData(image, 0, 0);
  const labels = document.createElement("div");
  labels.className = "color-ticks";
  for (const [at, text] of ticks) {
    const tick = Object.assign(document.createElement("span"), { textContent: text });
    tick.style.left = `${at * 100}%`;
    labels.append(tick);
  }
  const name = Object.assign(document.createElement("span"), { className: "color-title", textContent: title });
  el.replaceChildren(name, canvas, labels);
  el.dataset.scale = scale;
}
