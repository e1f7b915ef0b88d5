// The `logit_attribution` analysis: its card (position, target token), and its view: a layer x head
// grid of each head's direct contribution to the target's logit at the slider's iteration, and a bar
// chart of the largest components with the residual (final-norm bias, b_U) as its own bar.
// Tokens are user data: text nodes, or plotlyText() for Plotly.

import { layerHeadGrid } from "../heatmaps.js";
import { COLORS, RED_BLUE, displayToken, draw, plotlyText, renderTokens } from "../plotting.js";

export const name = "logit_attribution";

export const card = {
  title: "Logit attribution",
  button: "Attribute logit",
  hint: "On the prompt: each head's, MLP's and embedding's direct share of one token's logit (final norm scale frozen).",
  fields: [
    { name: "position", id: "attribution-position", label: "Position", type: "number", min: -4096, max: 4096, default: -1 },
    { name: "target", id: "attribution-target", label: "Target token", type: "text", placeholder: "top prediction" },
    { name: "other", id: "attribution-other", label: "Minus token", type: "text", placeholder: "none: the target's logit" },
  ],
};

/** No view state of its own in the URL. */
export const keys = {};
/** One iteration at a time in the grid: the page's iteration slider picks it. */
export const usesIteration = true;

export const view = `
  <div class="card">
    <div class="card-head"><h2>Tokens</h2></div>
    <div class="tokens" data-role="attribution-tokens" data-testid="attribution-tokens"></div>
    <p class="hint" data-role="attribution-summary" data-testid="attribution-summary"></p>
  </div>
  <div class="card">
    <div class="card-head"><h2>Direct logit attribution per head</h2></div>
    <div id="attribution-grid" data-testid="attribution-grid" class="plot"></div>
  </div>
  <div class="card">
    <div class="card-head"><h2>Largest components</h2></div>
    <div id="attribution-bars" data-testid="attribution-bars" class="plot"></div>
    <p class="formula"><span class="field-label">Formula</span> <span data-role="attribution-formula"></span></p>
  </div>`;

/** The request params from the card; an empty target is the model's top prediction (left out). */
export function params(form) {
  const values = form.values();
  if (!values.target) delete values.target;
  if (!values.other) delete values.other;
  return values;
}

/** Fill the card back from a loaded analysis. */
export function restore(form, analysis) {
  form.fill(analysis.params);
}

/** Fill the view `el` for one iteration. */
export function render(el, result, { iteration = 0, chart = {} } = {}) {
  renderTokens(el.querySelector("[data-role=attribution-tokens]"), result.tokens, { selected: result.position });
  const attributed = result.other === null || result.other === undefined
    ? `logit ${result.target_logit.toFixed(4)} (p = ${result.target_prob.toFixed(3)})`
    : `logit difference minus “${displayToken(result.other)}” ${result.logit_diff.toFixed(4)}`;
  el.querySelector("[data-role=attribution-summary]").textContent =
    `Target “${displayToken(result.target)}” at position ${result.position}: ${attributed} ` +
    `= components ${result.sum_of_components.toFixed(4)} + residual ` +
    `${result.residual.toFixed(4)}. ${result.norm} scale frozen at ${result.norm_scale.toFixed(4)}.`;
  el.querySelector("[data-role=attribution-formula]").textContent = result.formula;

  const values = result.heads[iteration]; // [layer][head]
  const limit = Math.max(1e-3, ...values.flat().filter((v) => v !== null).map(Math.abs));
  layerHeadGrid(el.querySelector("#attribution-grid"), values, {
    name: "DLA", zmin: -limit, zmax: limit, colorscale: RED_BLUE.map(([at, color]) => [1 - at, color]).reverse(),
    onSelect: () => {}, chart: { ...chart, part: "heads" },
  });

  const bars = [...result.components].reverse(); // largest at the top
  const trace = {
    type: "bar",
    orientation: "h",
    x: bars.map((c) => c.value),
    y: bars.map((c, i) => `${plotlyText(c.label)}<sub>${bars.length - i}</sub>`),
    marker: { color: bars.map((c) => (c.kind === "residual" ? COLORS.gray : c.value >= 0 ? COLORS.red : COLORS.blue)) },
    hovertemplate: "%{y}: %{x:.4f}<extra></extra>",
  };
  const bar = el.querySelector("#attribution-bars");
  bar.style.height = `${Math.max(220, 40 + bars.length * 20)}px`;
  draw(bar, [trace], {
    margin: { l: 140, r: 16, t: 8, b: 40 },
    xaxis: { title: { text: "contribution to the logit" }, zeroline: true },
    yaxis: { type: "category", automargin: true },
  }, { ...chart, part: "components" });
}
