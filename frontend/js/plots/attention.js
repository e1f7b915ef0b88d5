// The `attention` analysis: its card (the shared prompt, no fields of its own), and its view: the
// prompt's tokens, a layer x head grid of one head stat, and small multiples of every head's pattern.
// The head pattern itself is heatmaps.js'.

import { layerHeadGrid } from "../heatmaps.js";
import { renderTokens } from "../plotting.js";
import { renderThumbnails } from "../thumbnails.js";

export const name = "attention";

export const card = {
  title: "Attention",
  button: "Run attention",
  hint: "Every head's attention pattern on the prompt.",
  fields: [],
};

export const STATS = ["bos", "previous_token", "self", "entropy"];
/** View state kept in the URL beside the common keys. */
export const keys = { stat: { values: STATS, default: "bos" } };
/** One iteration at a time: the page's iteration slider picks it. */
export const usesIteration = true;
/** The view shows every head's preview, fetched after the open head is drawn. */
export const usesThumbnails = true;
/** What an open head's pattern is computed on. */
export const headNote = "On the prompt. Rows: query tokens; columns: the key tokens they attend to.";

export const view = `
  <div class="card">
    <div class="card-head">
      <h2>Tokens</h2><span class="hint" data-role="token-count"></span>
    </div>
    <div class="tokens" data-role="tokens" data-testid="tokens"></div>
  </div>
  <div class="card">
    <div class="card-head">
      <h2>Head stat</h2>
      <select id="stat-select" data-testid="stat-select" aria-label="Head stat">
        <option value="bos">First token (BOS)</option>
        <option value="previous_token">Previous token</option>
        <option value="self">Self</option>
        <option value="entropy">Entropy</option>
      </select>
    </div>
    <p class="hint" data-role="stat-note"></p>
    <div id="stat-grid" data-testid="stat-grid" class="plot"></div>
  </div>
  <div class="card">
    <div class="card-head"><h2>All heads</h2><span class="hint">click one to open it</span></div>
    <div id="thumbnails" data-testid="thumbnails" class="thumbs"></div>
  </div>`;

/** The head grid two prompts compare (pair.js): the chosen stat of every head at one iteration. */
export function headGrid(result, { stat, iteration }) {
  return { values: result.head_stats[stat][iteration], name: result.stat_labels?.[stat] ?? stat }; // [layer][head]
}

/** Wire the view's own controls once; update(changes) changes the view state. */
export function bind(el, { update }) {
  el.querySelector("#stat-select").addEventListener("change", (event) => update({ stat: event.target.value }));
}

/** The request params from the card: only the loop, which the page adds. */
export function params(form) {
  return form.values();
}

/** Fill the card back from a loaded analysis (the prompt and loop are the page's). */
export function restore(form, analysis) {
  form.fill(analysis.params);
}

/** Fill the attention view `el` for one iteration. `thumbnails` ([layer][head][row][col]) may be
 * null while they load; onSelect(layer, head) opens a head. */
export function render(el, result, { iteration, stat, thumbnails = null, selected = null, onSelect, chart }) {
  renderTokens(el.querySelector("[data-role=tokens]"), result.tokens);
  el.querySelector("[data-role=token-count]").textContent = `${result.tokens.length} tokens`;
  const silent = [...Array(result.n_layers).keys()].filter((layer) => !(result.attention_layers ?? [layer]).includes(layer));
  const hybrid = silent.length ? ` Layer${silent.length > 1 ? "s" : ""} ${silent.join(", ")} ha${silent.length > 1 ? "ve" : "s"} no attention (a hybrid stack's state-space or convolution layers): blank rows.` : "";
  el.querySelector("[data-role=stat-note]").textContent = result.stat_descriptions[stat] + hybrid; // defined once, by the analysis
  const select = el.querySelector("#stat-select");
  for (const option of select.options) option.textContent = result.stat_labels?.[option.value] ?? option.textContent;
  select.value = stat;
  const values = result.head_stats[stat][iteration]; // [layer][head]
  layerHeadGrid(el.querySelector("#stat-grid"), values, { name: stat, selected, onSelect, chart: { ...chart, part: stat } });
  const grid = el.querySelector("#thumbnails");
  if (thumbnails) renderThumbnails(grid, thumbnails, { selected, onSelect, attentionLayers: result.attention_layers });
  else grid.replaceChildren(); // never leave another analysis' or iteration's previews clickable
}
