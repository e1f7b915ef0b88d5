// The `head_scores` analysis: its card (sequence length, batch, seed), and its view: a layer x head
// grid of the chosen score, with its formula.

import { layerHeadGrid } from "../heatmaps.js";

export const name = "head_scores";

export const card = {
  title: "Head scores",
  button: "Head scores",
  hint: "Scores every head on random tokens repeated twice.",
  fields: [
    { name: "seq_len", id: "seq-len", label: "Length S", type: "number", min: 4, max: 512, default: 50 },
    { name: "batch", id: "batch", label: "Batch", type: "number", min: 1, max: 64, default: 10 },
    { name: "seed", id: "seed", label: "Seed", type: "number", min: 0, default: 0 },
  ],
};

export const SCORE_NAMES = {
  induction: "Induction",
  previous_token: "Previous token",
  duplicate_token: "Duplicate token",
  bos: "BOS sink",
};
/** View state kept in the URL beside the common keys. */
export const keys = { score: { values: Object.keys(SCORE_NAMES), default: "induction" } };
/** One iteration at a time: the page's iteration slider picks it. */
export const usesIteration = true;
/** What an open head's pattern is computed on. */
export const headNote = "On the first test sequence: BOS, S random tokens, then the same S again.";

export const view = `
  <div class="card">
    <div class="card-head">
      <h2>Head scores</h2>
      <div class="segmented" id="score-select" role="group" aria-label="Score">
        ${Object.entries(SCORE_NAMES).map(([score, label]) =>
          `<button type="button" data-score="${score}" data-testid="score-${score}">${label}</button>`).join("\n")}
      </div>
    </div>
    <p class="hint" data-role="score-params"></p>
    <div id="score-grid" data-testid="score-grid" class="plot"></div>
    <p class="formula"><span class="field-label">Formula</span> <span data-role="formula" data-testid="formula"></span></p>
  </div>`;

/** Wire the view's own controls once; update(changes) changes the view state. */
export function bind(el, { update }) {
  for (const button of el.querySelectorAll("[data-score]")) {
    button.addEventListener("click", () => update({ score: button.dataset.score }));
  }
}

/** The request params from the card. */
export function params(form) {
  return form.values();
}

/** Fill the card back from a loaded analysis. */
export function restore(form, analysis) {
  form.fill(analysis.params);
}

/** Fill the head-scores view `el` for one iteration and score; onSelect(layer, head) opens a head. */
export function render(el, result, { iteration, score, selected = null, onSelect, chart }) {
  const { seq_len, batch, seed } = result.params;
  el.querySelector("[data-role=score-params]").textContent =
    `${batch} random sequences of ${seq_len} tokens, each repeated once after BOS (seed ${seed}).`;
  el.querySelector("[data-role=formula]").textContent = result.formulas[score] ?? "";
  for (const button of el.querySelectorAll("[data-score]")) {
    button.setAttribute("aria-pressed", String(button.dataset.score === score));
  }
  const values = result.scores[score][iteration]; // [layer][head]
  layerHeadGrid(el.querySelector("#score-grid"), values, {
    name: SCORE_NAMES[score] ?? score, selected, onSelect, chart: { ...chart, part: score },
  });
}
