// The `head_ablation` analysis: no fields of its own (it reads the prompt), and its view: a layer x
// head grid of how much the text's loss rises with each head zeroed, on a diverging scale.

import { layerHeadGrid } from "../heatmaps.js";
import { RED_BLUE, renderTokens } from "../plotting.js";

export const name = "head_ablation";

export const card = {
  title: "Head ablation",
  button: "Ablate heads",
  hint: "On the prompt: the rise in next-token loss with each head zeroed, one at a time.",
  fields: [],
};

/** No view state of its own in the URL. */
export const keys = {};
/** One iteration at a time: the page's iteration slider picks it. */
export const usesIteration = true;

export const view = `
  <div class="card">
    <div class="card-head"><h2>Tokens</h2></div>
    <div class="tokens" data-role="ablation-tokens" data-testid="ablation-tokens"></div>
  </div>
  <div class="card">
    <div class="card-head"><h2>Loss rise when the head is zeroed</h2></div>
    <p class="hint" data-role="ablation-summary" data-testid="ablation-summary"></p>
    <div id="ablation-grid" data-testid="ablation-grid" class="plot"></div>
    <p class="formula"><span class="field-label">Formula</span> <span data-role="ablation-formula"></span></p>
  </div>`;

/** The request params from the card. */
export function params(form) {
  return form.values();
}

/** Fill the card back from a loaded analysis. */
export function restore(form, analysis) {
  form.fill(analysis.params);
}

/** Fill the view `el` for one iteration: red where zeroing the head hurts, blue where it helps. */
export function render(el, result, { iteration, chart }) {
  renderTokens(el.querySelector("[data-role=ablation-tokens]"), result.tokens);
  const values = result.delta_loss[iteration]; // [layer][head]
  const limit = Math.max(1e-3, ...values.flat().map(Math.abs));
  el.querySelector("[data-role=ablation-summary]").textContent =
    `Loss of the model as it is: ${result.loss.toFixed(4)} nats per token. Largest change ${limit.toFixed(4)}.`;
  el.querySelector("[data-role=ablation-formula]").textContent = result.formula;
  layerHeadGrid(el.querySelector("#ablation-grid"), values, {
    name: "Δ loss", zmin: -limit, zmax: limit, colorscale: RED_BLUE.map(([at, color]) => [1 - at, color]).reverse(),
    onSelect: () => {}, chart,
  });
}
