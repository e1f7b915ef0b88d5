// The `ablation` analysis: its card (heads, mode, metric and its tokens, iteration, sequence) and its
// view: a layer x head grid of how the metric changes with each head knocked out, on a diverging
// scale, and for a set of heads the metric clean vs with the whole set knocked out.

import { layerHeadGrid } from "../heatmaps.js";
import { RED_BLUE, renderTokens } from "../plotting.js";

export const name = "ablation";

export const card = {
  title: "Ablation",
  button: "Ablate heads",
  hint: "Knock heads out and see the metric change: every head alone (heads empty), or a set, e.g. L1H0, L0H0.",
  fields: [
    { name: "heads", id: "ablation-heads", label: "Heads", type: "text", placeholder: "all: sweep", default: "" },
    {
      name: "mode", id: "ablation-mode", label: "Mode", type: "select", default: "zero",
      options: [["zero", "zero"], ["mean", "mean over positions"], ["reference", "mean over reference texts"]],
    },
    { name: "reference", id: "ablation-reference", label: "Reference texts (| between; empty: built-in English)", type: "text", default: "" },
    {
      name: "metric", id: "ablation-metric", label: "Metric", type: "select", default: "loss",
      options: [["loss", "loss"], ["logit_diff", "logit difference"], ["prob", "probability"]],
    },
    { name: "target", id: "ablation-target", label: "Token", type: "text", default: "" },
    { name: "other", id: "ablation-other", label: "vs token", type: "text", default: "" },
    { name: "position", id: "ablation-position", label: "Position", type: "number", min: -4096, max: 4095, default: -1 },
    { name: "iteration", id: "ablation-iteration", label: "Iteration", type: "number", min: 0, placeholder: "each", default: null },
    {
      name: "sequence", id: "ablation-sequence", label: "On", type: "select", default: "text",
      options: [["text", "the prompt"], ["repeated_random", "repeated random tokens"]],
    },
  ],
};

/** No view state of its own in the URL. */
export const keys = {};
/** One iteration at a time: the page's iteration slider picks it. */
export const usesIteration = true;
/** What an open head's pattern is computed on. */
export const headNote = "Its attention in the clean run (nothing knocked out), on the (first) sequence.";

export const view = `
  <div class="card">
    <div class="card-head"><h2>Tokens</h2></div>
    <div class="tokens" data-role="ablation-tokens" data-testid="ablation-tokens"></div>
  </div>
  <div class="card">
    <div class="card-head"><h2>Change of the metric when the head is knocked out</h2></div>
    <p class="hint" data-role="ablation-summary" data-testid="ablation-summary"></p>
    <div id="ablation-grid" data-testid="ablation-grid" class="plot"></div>
    <p class="formula"><span class="field-label">Formula</span> <span data-role="ablation-formula"></span></p>
  </div>`;

const list = (text, separator) => text.split(separator).map((item) => item.trim()).filter(Boolean);

/** The request params from the card; empty fields are left to the server's defaults. */
export function params(form) {
  const values = form.values();
  for (const key of ["target", "other", "reference", "heads"]) if (values[key] === "") delete values[key];
  if (values.heads !== undefined) values.heads = list(values.heads, ",");
  if (values.reference !== undefined) values.reference = list(values.reference, "|");
  return values;
}

/** Fill the card back from a loaded analysis. */
export function restore(form, analysis) {
  const { heads, reference, ...rest } = analysis.params ?? {};
  form.fill(rest);
  form.set("heads", (heads ?? []).join(", "));
  form.set("reference", (reference ?? []).join(" | "));
}

const METRIC_NAMES = { loss: "loss", logit_diff: "logit difference", prob: "probability" };

/** Fill the view `el` for one iteration: red where knocking the head out raises the metric, blue where it lowers it. */
export function render(el, result, { iteration, selected = null, onSelect, chart }) {
  renderTokens(el.querySelector("[data-role=ablation-tokens]"), result.tokens);
  const values = result.delta[iteration]; // [layer][head]
  const limit = Math.max(1e-3, ...values.flat().filter((v) => v !== null).map(Math.abs));
  const metric = METRIC_NAMES[result.metric] ?? result.metric;
  let summary = `${metric} of the model as it is: ${result.clean.toFixed(4)}.`;
  if (result.heads) {
    summary += ` With ${result.heads.join(", ")} knocked out together: ${result.ablated.toFixed(4)} (Δ ${(result.ablated - result.clean).toFixed(4)}).`;
  }
  if (result.iteration !== null && result.iteration !== undefined && result.iteration !== iteration) {
    summary += ` Knocked out at iteration ${result.iteration} only: see that iteration.`;
  }
  el.querySelector("[data-role=ablation-summary]").textContent = `${summary} Largest change ${limit.toFixed(4)}.`;
  el.querySelector("[data-role=ablation-formula]").textContent = result.formula;
  layerHeadGrid(el.querySelector("#ablation-grid"), values, {
    name: `Δ ${metric}`, zmin: -limit, zmax: limit, colorscale: RED_BLUE.map(([at, color]) => [1 - at, color]).reverse(),
    // results migrated from head_ablation stored no patterns: their cells open nothing
    selected, onSelect: result.patterns === false ? () => {} : onSelect, chart,
  });
}
