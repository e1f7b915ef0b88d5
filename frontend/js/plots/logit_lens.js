// The `logit_lens` analysis: its card (the position to read), and its view: a table with one row per
// loop iteration and one column per layer; each cell is the early exit's top token there, shaded by
// its probability, with the top-k list on hover. Tokens are user data: text nodes, never HTML.

import { displayToken, renderTokens } from "../plotting.js";

export const name = "logit_lens";

export const card = {
  title: "Logit lens",
  button: "Logit lens",
  hint: "On the prompt: the top tokens of every iteration's early exit (−1 = last token).",
  fields: [{ name: "position", id: "lens-position", label: "Position", type: "number", min: -4096, max: 4096, default: -1 }],
};

/** No view state of its own in the URL. */
export const keys = {};
/** Every iteration is a row of the table: no iteration slider. */
export const usesIteration = false;

export const view = `
  <div class="card">
    <div class="card-head"><h2>Logit lens</h2><span class="hint">hover a cell for its top tokens</span></div>
    <div class="tokens" data-role="lens-tokens" data-testid="lens-tokens"></div>
    <p class="hint" data-role="lens-note"></p>
    <div id="lens-table" data-testid="lens-table" class="lens-wrap"></div>
  </div>`;

/** The request params from the card. */
export function params(form) {
  return form.values();
}

/** Fill the card back from a loaded analysis. */
export function restore(form, analysis) {
  form.fill(analysis.params);
}

function cell(result, iteration, layer) {
  const td = document.createElement("td");
  const tokens = result.top_tokens[iteration][layer];
  const probs = result.top_probs[iteration][layer];
  td.className = "lens-cell";
  td.dataset.iteration = iteration;
  td.dataset.layer = layer;
  if (!tokens.length) { // a layer this model's own exit does not read (Huginn: only after its core)
    td.textContent = "·";
    td.title = "Not read: this model's exit runs after the looped layers only.";
    return td;
  }
  td.style.background = `rgba(37, 99, 235, ${(0.08 + 0.8 * probs[0]).toFixed(3)})`;
  if (probs[0] > 0.55) td.style.color = "#ffffff";
  const token = document.createElement("span");
  token.className = "token";
  token.textContent = displayToken(tokens[0]);
  const prob = document.createElement("small");
  prob.textContent = ` ${probs[0].toFixed(2)}`;
  td.append(token, prob);
  if (result.next_token_prob) {
    const next = document.createElement("div");
    next.className = "hint";
    next.textContent = `next: ${result.next_token_prob[iteration][layer].toFixed(2)} (#${result.next_token_rank[iteration][layer] + 1})`;
    td.append(next);
  }
  td.title = tokens.map((t, k) => `${displayToken(t)}  ${probs[k].toFixed(3)}`).join("\n");
  td.dataset.iteration = iteration;
  td.dataset.layer = layer;
  return td;
}

/** Fill the logit-lens view `el`. */
export function render(el, result) {
  renderTokens(el.querySelector("[data-role=lens-tokens]"), result.tokens, { selected: result.position });
  const readout = result.loop_layers[1];
  const note = result.next_token === null
    ? "The last token: what the model would write next."
    : `The text continues with “${displayToken(result.next_token)}”; each cell also gives its probability and rank.`;
  el.querySelector("[data-role=lens-note]").textContent =
    `Read at position ${result.position}. Layer ${readout} is the early exit (the last looped layer). ${note}`;

  const table = document.createElement("table");
  table.className = "lens";
  const head = table.createTHead().insertRow();
  head.append(Object.assign(document.createElement("th"), { textContent: "iteration \\ layer" }));
  for (let layer = 0; layer < result.n_layers; layer++) {
    const th = document.createElement("th");
    th.textContent = layer === readout ? `${layer} (exit)` : String(layer);
    head.append(th);
  }
  const body = table.createTBody();
  for (let iteration = 0; iteration < result.n_iterations; iteration++) {
    const row = body.insertRow();
    row.append(Object.assign(document.createElement("th"), { textContent: String(iteration) }));
    for (let layer = 0; layer < result.n_layers; layer++) row.append(cell(result, iteration, layer));
  }
  el.querySelector("#lens-table").replaceChildren(table);
}
