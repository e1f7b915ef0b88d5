// Compare two loop iterations of one head: both attention patterns side by side and their
// difference (B − A) on a diverging scale, for any analysis that stores patterns per iteration.

import { BLUES, RED_BLUE, draw, plotlyText, tokenLabels } from "./plotting.js";

/** [query_pos][key_pos] of b − a, and the largest absolute entry. */
export function difference(a, b) {
  let max = 0;
  const rows = b.map((row, q) => Array.from(row, (value, k) => {
    const d = value - a[q][k];
    max = Math.max(max, Math.abs(d));
    return d;
  }));
  return { rows, max };
}

/** A compact pattern heatmap: no colorbar unless asked, token ticks only while they fit (pair.js draws with it too). */
export function heatmap(el, tokens, rows, { title, zmin, zmax, colorscale, showscale = false, hover, chart }) {
  const labels = tokenLabels(tokens);
  const n = tokens.length;
  const trace = {
    type: "heatmap", z: rows, x: labels, y: labels, zmin, zmax, colorscale, showscale,
    colorbar: showscale ? { thickness: 10, outlinewidth: 0 } : undefined,
    hovertemplate: hover, hoverongaps: false,
  };
  const axis = { type: "category", showgrid: false, zeroline: false, automargin: true, showticklabels: n <= 32,
                 tickfont: { size: 9 }, dtick: 1 };
  const layout = {
    title: { text: plotlyText(title), x: 0, xanchor: "left", font: { size: 13 } },
    margin: { l: 4, r: 4, t: 30, b: 4 },
    xaxis: { ...axis, tickangle: -90, constrain: "domain" },
    yaxis: { ...axis, autorange: "reversed", scaleanchor: "x", constrain: "domain" },
    plot_bgcolor: "#ffffff",
  };
  el.style.height = `${Math.max(240, Math.min(720, (el.clientWidth || 320) + 20))}px`;
  return draw(el, [trace], layout, chart);
}

/** Fill the compare panel `el` with iterations a and b of one head (rows: [query_pos][key_pos]);
 * `chart` names the PNGs (plotting.js fileName: model, analysis, layer, head). */
export async function render(el, tokens, { a, b, rowsA, rowsB, chart = {} }) {
  const { rows, max } = difference(rowsA, rowsB);
  el.querySelector("[data-role=compare-note]").textContent =
    `Iteration ${a} (A) and iteration ${b} (B); largest change ${max.toFixed(3)}.`;
  const limit = Math.max(max, 1e-3);
  await Promise.all([
    heatmap(el.querySelector("#compare-a"), tokens, rowsA, {
      title: `A: iteration ${a}`, zmin: 0, zmax: 1, colorscale: BLUES, hover: "%{y} → %{x}: %{z:.3f}<extra>A</extra>",
      chart: { ...chart, iteration: a },
    }),
    heatmap(el.querySelector("#compare-b"), tokens, rowsB, {
      title: `B: iteration ${b}`, zmin: 0, zmax: 1, colorscale: BLUES, hover: "%{y} → %{x}: %{z:.3f}<extra>B</extra>",
      chart: { ...chart, iteration: b },
    }),
    heatmap(el.querySelector("#compare-diff"), tokens, rows, {
      title: `B − A (red: less attention at iteration ${b}, blue: more)`, zmin: -limit, zmax: limit,
      colorscale: RED_BLUE, showscale: true, hover: "%{y} → %{x}: %{z:+.3f}<extra>B − A</extra>",
      chart: { ...chart, part: `diff-it${b}-it${a}` },
    }),
  ]);
}
