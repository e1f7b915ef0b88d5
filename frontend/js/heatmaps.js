// Plotly heatmaps shared by the analysis views: the layer x head grid and one head's pattern.
// Defaults (fonts, config, token labels) are plotting.js'.

import { BLUES, COLORS, displayToken, draw, onClick, plotlyText, purge, relayout, tokenLabels } from "./plotting.js";

export { plotlyReady } from "./plotting.js";

/** Heatmap of a [layer][head] matrix; onSelect(layer, head) on click; the selected cell outlined.
 * `chart` names the PNG (plotting.js fileName). */
export function layerHeadGrid(el, values, { name, selected = null, onSelect, zmin = 0, zmax = 1, colorscale = "Viridis", chart = {} }) {
  const nLayers = values.length;
  const nHeads = values[0]?.length ?? 0;
  const label = plotlyText(name);
  const trace = {
    type: "heatmap",
    z: values, // [layer][head]
    x: [...Array(nHeads).keys()],
    y: [...Array(nLayers).keys()],
    zmin,
    zmax,
    colorscale,
    colorbar: { thickness: 12, outlinewidth: 0 },
    xgap: 1,
    ygap: 1,
    hovertemplate: `L%{y}H%{x} ${label}: %{z:.3f}<extra></extra>`,
  };
  if (nLayers * nHeads <= 256) Object.assign(trace, { texttemplate: "%{z:.2f}", textfont: { size: 10 } });
  const shapes = selected
    ? [{ type: "rect", x0: selected.head - 0.5, x1: selected.head + 0.5, y0: selected.layer - 0.5, y1: selected.layer + 0.5,
         line: { color: COLORS.highlight, width: 3 } }]
    : [];
  const layout = {
    margin: { l: 56, r: 16, t: 8, b: 44 },
    xaxis: { title: { text: "head" }, dtick: 1, showgrid: false, zeroline: false },
    yaxis: { title: { text: "layer" }, dtick: 1, autorange: "reversed", showgrid: false, zeroline: false },
    shapes,
  };
  // The height lives on the element, not the layout, so that resizing keeps it.
  el.style.height = `${Math.max(220, Math.min(520, 60 + nLayers * 34))}px`;
  draw(el, [trace], layout, chart);
  onClick(el, (point) => onSelect(Number(point.y), Number(point.x)));
}

// Past this many tokens the head heatmap uses positions on its axes: a categorical axis of T
// labels makes Plotly lay out T ticks per axis (seconds at T = 1024), and they would not be legible.
const MAX_CATEGORY_TOKENS = 256;
// Zoomed in to this many tokens or fewer, every visible token is labelled (positions and categories alike).
const MAX_LABELLED = 48;

/** Tick settings of a pattern axis showing positions lo..hi (axis units): every token labelled
 * when few enough show, else about 32 labels (a category axis thins its own). */
function axisTicks(tokens, lo, hi, categorical) {
  const first = Math.max(0, Math.ceil(lo));
  const last = Math.min(tokens.length - 1, Math.floor(hi));
  const count = last - first + 1;
  if (categorical) return { dtick: count <= MAX_LABELLED ? 1 : null, "tickfont.size": count > 48 ? 9 : 11 };
  const step = count <= MAX_LABELLED ? 1 : Math.ceil(count / 32);
  const positions = [];
  for (let pos = Math.ceil(first / step) * step; pos <= last; pos += step) positions.push(pos);
  const short = (token) => (token.length > 12 ? `${token.slice(0, 11)}…` : token);
  return {
    tickmode: "array", tickvals: positions,
    ticktext: positions.map((pos) => `${plotlyText(short(displayToken(tokens[pos])))}<sub>${pos}</sub>`),
  };
}

/** On zoom or pan (and back), label the visible tokens again on both axes. */
function labelOnZoom(el, tokens, categorical) {
  el.removeAllListeners?.("plotly_relayout");
  el.on("plotly_relayout", (event) => {
    if (!Object.keys(event).some((key) => /^[xy]axis\.(range|autorange)/.test(key))) return; // not our own tick update
    const update = {};
    for (const axis of ["xaxis", "yaxis"]) {
      const [a, b] = el._fullLayout[axis].range;
      for (const [key, value] of Object.entries(axisTicks(tokens, Math.min(a, b), Math.max(a, b), categorical))) {
        update[`${axis}.${key}`] = value;
      }
    }
    relayout(el, update);
  });
}

/** One head's attention pattern: query tokens down, key tokens across; hover "query → key: weight". */
export function patternHeatmap(el, tokens, rows, { title = "", chart = {} } = {}) {
  const n = tokens.length;
  const categorical = n <= MAX_CATEGORY_TOKENS;
  const labels = tokenLabels(tokens);
  const trace = {
    type: "heatmap",
    z: rows, // [query_pos][key_pos]
    zmin: 0,
    zmax: 1,
    colorscale: BLUES,
    colorbar: { thickness: 12, outlinewidth: 0, title: { text: "weight", side: "right" } },
    hoverongaps: false,
  };
  let axis;
  if (categorical) {
    Object.assign(trace, { x: labels, y: labels, hovertemplate: "%{y} → %{x}: %{z:.3f}<extra></extra>" });
    axis = {
      type: "category", showgrid: false, zeroline: false, automargin: true,
      tickfont: { size: n > 48 ? 9 : 11 },
      dtick: n <= 48 ? 1 : undefined, // every token while they fit, else Plotly thins the labels
    };
  } else {
    // Positions on the axes, a token label every `step` positions; the hover names both tokens
    // through the readout line below the plot (a per-cell hover text would be T*T strings).
    // Fixed margins, not automargin: measuring the labels costs Plotly two more full draws.
    Object.assign(trace, { hovertemplate: "query %{y} → key %{x}: %{z:.3f}<extra></extra>" });
    axis = { type: "linear", showgrid: false, zeroline: false, automargin: false, tickfont: { size: 9 }, ...axisTicks(tokens, 0, n - 1, false) };
  }
  const layout = {
    title: title ? { text: plotlyText(title), x: 0, xanchor: "left", font: { size: 14 } } : undefined,
    margin: categorical ? { l: 8, r: 8, t: title ? 36 : 8, b: 8 } : { l: 110, r: 8, t: title ? 36 : 8, b: 110 },
    xaxis: { ...axis, title: { text: "key" }, tickangle: n > 16 ? -90 : -45, constrain: "domain" },
    yaxis: { ...axis, title: { text: "query" }, autorange: "reversed", scaleanchor: "x", constrain: "domain" },
    plot_bgcolor: "#ffffff",
  };
  // Square cells: as tall as the panel is wide, on the element so that resizing keeps it.
  el.style.height = `${Math.max(360, Math.min(900, (el.clientWidth || 640) - 20))}px`;
  return draw(el, [trace], layout, chart).then(() => {
    readout(el, categorical ? null : tokens);
    labelOnZoom(el, tokens, categorical);
    return el;
  });
}

/** Take a head's heatmap and its readout off the page (a long prompt's head is drawn by longmap.js). */
export function clearPattern(el) {
  if (el.nextElementSibling?.classList.contains("hover-readout")) el.nextElementSibling.remove();
  purge(el);
}

/** The line under a long pattern that names the hovered query and key tokens (as text, never HTML). */
function readout(el, tokens) {
  let line = el.nextElementSibling?.classList.contains("hover-readout") ? el.nextElementSibling : null;
  el.removeAllListeners?.("plotly_hover");
  if (!tokens) {
    line?.remove();
    return;
  }
  if (!line) {
    line = document.createElement("p");
    line.className = "hover-readout";
    line.dataset.testid = "hover-readout";
    el.after(line);
  }
  line.textContent = "Hover a cell to see its query and key tokens.";
  el.on("plotly_hover", (event) => {
    const point = event.points?.[0];
    if (!point) return;
    const [q, k] = [Number(point.y), Number(point.x)];
    line.textContent = `query ${q} ${displayToken(tokens[q] ?? "")} → key ${k} ${displayToken(tokens[k] ?? "")}: ${Number(point.z).toFixed(3)}`;
  });
}
