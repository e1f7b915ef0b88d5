// The `logit_lens` analysis: its card (the position to read), and its view: a table with one row per
// loop iteration and one column per layer; each cell is the early exit's top token there, shaded by
// its probability, with the top-k list on hover. Tokens are user data: text nodes, never HTML.

import { BLUES, displayToken, draw, plotlyText, renderTokens } from "../plotting.js";

export const name = "logit_lens";

export const card = {
  title: "Logit lens",
  button: "Logit lens",
  hint: "On the prompt: the top tokens of every iteration's early exit (−1 = last token).",
  fields: [
    { name: "position", id: "lens-position", label: "Position", type: "number", min: -4096, max: 4096, default: -1 },
    { name: "all_positions", id: "lens-all-positions", label: "Read", type: "select", default: "false",
      options: [["false", "this position"], ["true", "every position (grid)"]] },
  ],
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
    <label data-role="lens-grid-iteration-label" hidden>Iteration <input type="range" data-role="lens-grid-iteration"
      data-testid="lens-grid-iteration" min="0" step="1"> <span data-role="lens-grid-iteration-value"></span></label>
    <div id="lens-grid" data-testid="lens-grid" class="plot" hidden></div>
  </div>`;

/** The request params from the card. */
export function params(form) {
  const values = form.values();
  values.all_positions = values.all_positions === "true";
  if (!values.all_positions) delete values.all_positions; // the default: a v1 link's params stay as they were
  return values;
}

/** Fill the card back from a loaded analysis. */
export function restore(form, analysis) {
  form.fill({ ...analysis.params, all_positions: String(Boolean(analysis.params?.all_positions)) });
}

/** The every-position grid at one iteration: positions down, layers across, each cell its top-1
 * token (text) shaded by its probability, the top 5 on hover. Tokens go through plotlyText(). */
function drawGrid(el, result, iteration, chart) {
  const name = (id) => plotlyText(displayToken(result.grid_tokens[id] ?? ""));
  const rows = result.tokens.map((_, pos) => [...Array(result.n_layers).keys()].map((layer) => {
    const ids = result.grid_ids[iteration][layer];
    return ids.length ? { ids: ids[pos], probs: result.grid_probs[iteration][layer][pos] } : null;
  }));
  const trace = {
    type: "heatmap",
    z: rows.map((row) => row.map((cell) => (cell ? cell.probs[0] : null))), // [pos][layer]
    text: rows.map((row) => row.map((cell) => (cell ? name(cell.ids[0]) : ""))),
    customdata: rows.map((row, pos) => row.map((cell, layer) => (cell
      ? `${plotlyText(displayToken(result.tokens[pos]))} (${pos}), layer ${layer}<br>` +
        cell.ids.map((id, k) => `${name(id)}  ${cell.probs[k].toFixed(3)}`).join("<br>")
      : "not read"))),
    texttemplate: "%{text}",
    hovertemplate: "%{customdata}<extra></extra>",
    zmin: 0, zmax: 1, colorscale: BLUES, xgap: 1, ygap: 1, hoverongaps: false,
    colorbar: { thickness: 12, outlinewidth: 0, title: { text: "p(top 1)", side: "right" } },
  };
  const layout = {
    margin: { l: 120, r: 16, t: 8, b: 44 },
    xaxis: { title: { text: "layer" }, dtick: 1, showgrid: false, zeroline: false },
    yaxis: { tickvals: [...result.tokens.keys()], ticktext: result.tokens.map((t, pos) => `${plotlyText(displayToken(t))}<sub>${pos}</sub>`),
             autorange: "reversed", showgrid: false, zeroline: false },
  };
  el.style.height = `${Math.max(240, Math.min(1600, 60 + result.tokens.length * 22))}px`;
  return draw(el, [trace], layout, { ...chart, iteration, part: "grid" });
}

/** The grid view with its own iteration slider (the table shows every iteration as a row). */
function renderGrid(el, result, chart) {
  const label = el.querySelector("[data-role=lens-grid-iteration-label]");
  const slider = el.querySelector("[data-role=lens-grid-iteration]");
  const value = el.querySelector("[data-role=lens-grid-iteration-value]");
  const grid = el.querySelector("#lens-grid");
  label.hidden = result.n_iterations < 2;
  grid.hidden = false;
  slider.max = String(result.n_iterations - 1);
  slider.value = String(result.n_iterations - 1);
  const show = () => {
    value.textContent = slider.value;
    drawGrid(grid, result, Number(slider.value), chart);
  };
  slider.oninput = show;
  show();
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
export function render(el, result, { chart = {} } = {}) {
  renderTokens(el.querySelector("[data-role=lens-tokens]"), result.tokens, { selected: result.position });
  el.querySelector("[data-role=lens-grid-iteration-label]").hidden = true;
  el.querySelector("#lens-grid").hidden = true;
  if (result.grid_ids) { // every position (v2, all_positions): the grid instead of the table
    el.querySelector("[data-role=lens-note]").textContent =
      `Every position: the early exit's top token after each layer, shaded by its probability; hover a cell for its top 5. ` +
      `Layer ${result.loop_layers[1]} is the early exit; its row at the last iteration is the model's own prediction.`;
    el.querySelector("#lens-table").replaceChildren();
    renderGrid(el, result, chart);
    return;
  }
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
