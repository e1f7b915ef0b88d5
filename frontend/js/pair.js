// Two prompts side by side: two analyses of one model (`?analysis=A&other=B`), their head grids, the
// grid of B − A, and the open head's two patterns (with their difference where the token counts
// match). Applies to analyses whose plot module has a head grid and whose type takes a prompt.

import * as api from "./api.js";
import { heatmap } from "./compare.js";
import { layerHeadGrid } from "./heatmaps.js";
import { BLUES, RED_BLUE } from "./plotting.js";
import { BY_NAME } from "./plots/index.js";

const short = (id) => id.slice(0, 8);

/** Whether an analysis type compares across prompts: its module draws a head grid and it reads a prompt. */
export function pairs(type) {
  return Boolean(type?.takes_text && BY_NAME.get(type.name)?.headGrid);
}

/** Why analyses `a` and `b` cannot be shown side by side, or null when they can. */
export function problem(a, b, types) {
  const kinds = [...types.values()].filter(pairs).map((type) => type.name).join(", ");
  for (const x of [a, b]) {
    if (!pairs(types.get(x.analysis))) return `Analysis ${short(x.id)} is a ${x.analysis} analysis: two prompts compare ${kinds} analyses only.`;
  }
  if (a.analysis !== b.analysis) return `Analysis ${short(a.id)} is ${a.analysis} and ${short(b.id)} is ${b.analysis}: compare two of one kind.`;
  if (a.model !== b.model) return `The two analyses are of different models (${a.model} and ${b.model}): their heads are not the same heads.`;
  return null;
}

/** [layer][head] of b − a and its largest absolute entry. */
function gridDifference(a, b) {
  let max = 0;
  const rows = b.map((row, layer) => row.map((value, head) => {
    const d = value === null || a[layer][head] === null ? null : value - a[layer][head];
    if (d !== null) max = Math.max(max, Math.abs(d));
    return d;
  }));
  return { rows, max };
}

/** Show the pair panel `el` for `a` and `other` ({analysis, error}: the second analysis loaded, or
 * why not): the grids (renderGrids), or why the two cannot be compared; the maps are renderMaps'. */
export function render(el, a, other, types, state, options) {
  el.hidden = false;
  const why = other?.error ?? (other?.analysis ? problem(a, other.analysis, types) : null);
  el.querySelector("[data-role=problem]").hidden = !why;
  el.querySelector("[data-role=problem]").textContent = why ?? "";
  el.querySelector("[data-role=body]").hidden = Boolean(why) || !other?.analysis;
  el.dataset.ready = why ? "refused" : "false";
  if (why || !other?.analysis) return;
  el.querySelector("[data-role=maps-hint]").hidden = state.layer !== null;
  if (state.layer === null) el.querySelector("[data-role=maps]").hidden = true;
  renderGrids(el, a, other.analysis, state, options);
}

/** Fill the pair panel `el`: both prompts as text, both head grids at `iteration` (clamped to each)
 * and B − A. state: the page's (its module's keys, e.g. `stat`); onSelect(layer, head) opens a head. */
export function renderGrids(el, a, b, state, { selected, onSelect, chart }) {
  const plot = BY_NAME.get(a.analysis);
  el.querySelector("[data-role=text-a]").textContent = a.text ?? "";
  el.querySelector("[data-role=text-b]").textContent = b.text ?? "";
  const at = (x) => Math.min(state.iteration, (x.result.n_iterations ?? 1) - 1);
  const gridA = plot.headGrid(a.result, { ...state, iteration: at(a) });
  const gridB = plot.headGrid(b.result, { ...state, iteration: at(b) });
  const { rows, max } = gridDifference(gridA.values, gridB.values);
  const limit = Math.max(max, 1e-3);
  el.querySelector("[data-role=grid-note]").textContent =
    `${gridA.name} of every head on A (${a.result.tokens.length} tokens) and B (${b.result.tokens.length} tokens); largest change ${max.toFixed(3)}.`;
  const options = { selected, onSelect, zmin: gridA.zmin, zmax: gridA.zmax };
  layerHeadGrid(el.querySelector("#pair-grid-a"), gridA.values, { ...options, name: `A ${gridA.name}`, chart: { ...chart, part: "A" } });
  layerHeadGrid(el.querySelector("#pair-grid-b"), gridB.values, { ...options, name: `B ${gridA.name}`, chart: { ...chart, part: "B" } });
  layerHeadGrid(el.querySelector("#pair-grid-diff"), rows, {
    ...options, name: `B − A ${gridA.name}`, zmin: -limit, zmax: limit, colorscale: RED_BLUE, chart: { ...chart, part: "B-A" },
  });
  Object.assign(el.dataset, { a: a.id, b: b.id, ready: "true" });
}

/** The open head's pattern in both analyses, side by side; their difference where the token counts
 * match (different prompts of one length still line up position by position). */
export async function renderMaps(el, a, b, { layer, head, iteration, chart }) {
  const box = el.querySelector("[data-role=maps]");
  box.dataset.ready = "false";
  box.hidden = layer === null;
  if (layer === null) return;
  const itB = Math.min(iteration, (b.result.n_iterations ?? 1) - 1);
  const [rowsA, rowsB] = await Promise.all([
    api.getPattern(a.id, { layer, head, iteration }),
    api.getPattern(b.id, { layer, head, iteration: itB }),
  ]);
  const tokensA = a.result.tokens;
  const tokensB = b.result.tokens;
  const same = tokensA.length === tokensB.length;
  const loops = (a.result.n_iterations ?? 1) > 1 ? `, iteration ${iteration}${itB === iteration ? "" : ` (B: ${itB})`}` : "";
  const diff = el.querySelector("#pair-map-diff");
  diff.hidden = !same;
  const drawn = [
    heatmap(el.querySelector("#pair-map-a"), tokensA, rowsA, {
      title: `A: L${layer}H${head}`, zmin: 0, zmax: 1, colorscale: BLUES, hover: "%{y} → %{x}: %{z:.3f}<extra>A</extra>", chart: { ...chart, part: "A" },
    }),
    heatmap(el.querySelector("#pair-map-b"), tokensB, rowsB, {
      title: `B: L${layer}H${head}`, zmin: 0, zmax: 1, colorscale: BLUES, hover: "%{y} → %{x}: %{z:.3f}<extra>B</extra>", chart: { ...chart, part: "B" },
    }),
  ];
  let note = `Layer ${layer}, head ${head}${loops}: A (${tokensA.length} tokens) and B (${tokensB.length} tokens).`;
  if (same) {
    let max = 0;
    const rows = rowsB.map((row, q) => Array.from(row, (value, k) => {
      const d = value - rowsA[q][k];
      max = Math.max(max, Math.abs(d));
      return d;
    }));
    const limit = Math.max(max, 1e-3);
    note += ` Largest change ${max.toFixed(3)}.`;
    drawn.push(heatmap(diff, tokensB, rows, {
      title: "B − A by position (red: less attention on B, blue: more)", zmin: -limit, zmax: limit, colorscale: RED_BLUE,
      showscale: true, hover: "%{y} → %{x}: %{z:+.3f}<extra>B − A</extra>", chart: { ...chart, part: "B-A" },
    }));
  } else {
    note += " Token counts differ: no position-by-position difference.";
  }
  el.querySelector("[data-role=maps-note]").textContent = note;
  await Promise.all(drawn);
  Object.assign(box.dataset, { layer, head, iteration, ready: "true" });
}

/** Fill the history picker `select` with the other done analyses of `current`'s kind on its model. */
export async function offerHistory(select, current) {
  const page = await api.listAnalyses({ model: current.model, analysis: current.analysis, status: "done", limit: 50 });
  const options = page.items
    .filter((item) => item.id !== current.id)
    .map((item) => new Option(`“${item.text_start ?? ""}”`, item.id)); // user data: Option text, never HTML
  select.replaceChildren(new Option(options.length ? "Pick from History…" : "No other prompt in History", ""), ...options);
  select.disabled = !options.length;
}
