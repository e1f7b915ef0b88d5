// The `data_attribution` analysis: its card (the head, how many sampled steps and checkpoints) and its
// view: the training rows that most raise and most lower the head's induction score (TracIn), each
// token shaded by its share of the influence, and the influence of every candidate by data kind.

import { COLORS, displayToken, draw, plotlyText } from "../plotting.js";

export const name = "data_attribution";

export const card = {
  title: "Training-data attribution",
  button: "Rank training examples",
  hint: "Which training rows built a head (TracIn over checkpoints up to the phase change, on the head's own parameters).",
  fields: [
    { name: "layer", id: "da-layer", label: "Layer", type: "number", min: 0, max: 1024, default: 1 },
    { name: "head", id: "da-head", label: "Head", type: "number", min: 0, max: 1024, default: 1 },
    { name: "n_steps", id: "da-n-steps", label: "Sampled steps", type: "number", min: 1, max: 256, default: 16 },
    { name: "n_checkpoints", id: "da-n-checkpoints", label: "Checkpoints", type: "number", min: 1, max: 64, default: 6 },
    { name: "top_k", id: "da-top-k", label: "Shown", type: "number", min: 1, max: 64, default: 8 },
    { name: "seed", id: "da-seed", label: "Seed", type: "number", min: 0, default: 0 },
  ],
};

/** No view state of its own in the URL. */
export const keys = {};
export const usesIteration = false;

export const view = `
  <div class="card">
    <div class="card-head"><h2>Training examples by influence on the head</h2></div>
    <p class="hint" data-role="da-summary" data-testid="da-summary"></p>
    <h3>Raise the score most</h3>
    <div data-role="da-top" data-testid="da-top"></div>
    <h3>Lower the score most</h3>
    <div data-role="da-bottom" data-testid="da-bottom"></div>
    <p class="formula"><span class="field-label">Influence</span> <span data-role="da-formula"></span></p>
    <p class="formula"><span class="field-label">Token share</span> <span data-role="da-token-formula"></span></p>
  </div>
  <div class="card">
    <div class="card-head"><h2>Influence by data kind</h2></div>
    <div id="da-kinds" data-testid="da-kinds" class="plot"></div>
  </div>`;

export function params(form) {
  return form.values();
}

export function restore(form, analysis) {
  form.fill(analysis.params);
}

/** A background for a token's contribution: blue raises the score, red lowers it, alpha by |c| / scale. */
export function shade(contribution, scale) {
  const a = scale > 0 ? Math.min(1, Math.abs(contribution) / scale) : 0;
  return contribution >= 0 ? `rgba(29, 78, 216, ${(0.6 * a).toFixed(3)})` : `rgba(185, 28, 28, ${(0.6 * a).toFixed(3)})`;
}

/** One example: its step, row, kind and influence, then its tokens as text chips shaded by contribution. */
function exampleRow(example) {
  const row = document.createElement("div");
  row.className = "da-example";
  row.dataset.testid = "da-example";
  const head = document.createElement("div");
  head.className = "hint";
  head.textContent = `step ${example.step}, row ${example.row} (${example.kind}): influence ${example.influence.toExponential(3)}`;
  const tokens = document.createElement("div");
  tokens.className = "tokens";
  const scale = Math.max(...example.contributions.map(Math.abs));
  tokens.replaceChildren(...example.tokens.map((token, pos) => {
    const chip = document.createElement("span");
    chip.className = "token";
    chip.textContent = displayToken(token); // user data: text, never HTML
    chip.style.background = shade(example.contributions[pos], scale);
    chip.title = `position ${pos}: ${example.contributions[pos].toExponential(2)}`;
    return chip;
  }));
  row.replaceChildren(head, tokens);
  return row;
}

export function render(el, result, { chart } = {}) {
  const head = `L${result.layer}H${result.head}`;
  const kinds = result.by_kind.map((k) => `${k.kind}: ${k.count} rows, mean ${k.mean.toExponential(2)}, ${k.positive} raise it`);
  el.querySelector("[data-role=da-summary]").textContent =
    `${result.examples.length} rows of ${result.steps.length} training steps before step ${result.until_step}, ` +
    `scored against ${head}'s induction score over checkpoints ${result.checkpoints.join(", ")} ` +
    `(${result.n_head_params} head parameters). ${kinds.join("; ")}.`;
  el.querySelector("[data-role=da-formula]").textContent = result.formulas.influence;
  el.querySelector("[data-role=da-token-formula]").textContent = result.formulas.contribution;
  el.querySelector("[data-role=da-top]").replaceChildren(...result.top.map(exampleRow));
  el.querySelector("[data-role=da-bottom]").replaceChildren(...result.bottom.map(exampleRow));
  const palette = [COLORS.highlight, COLORS.muted, "#1d4ed8", "#059669"];
  draw(el.querySelector("#da-kinds"), result.by_kind.map((kind, i) => ({
    type: "histogram", opacity: 0.6, name: plotlyText(kind.kind), marker: { color: palette[i % palette.length] },
    x: result.examples.filter((e) => e[2] === kind.kind).map((e) => e[3]),
    hovertemplate: `${plotlyText(kind.kind)}: %{y} rows in %{x}<extra></extra>`,
  })), {
    barmode: "overlay",
    margin: { t: 24, r: 16, b: 48, l: 56 },
    height: 300,
    xaxis: { title: { text: `influence on ${head}'s induction score` }, exponentformat: "e" },
    yaxis: { title: { text: "rows" } },
  }, { ...chart, part: "kinds" });
}
