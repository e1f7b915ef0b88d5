// The `patching` analysis: its card (the corrupted prompt, the two answer tokens, which residual), and
// its view: how much of the clean logit difference each patch restores, per (layer, position) of the
// residual stream with both prompts' tokens on the axis, and per layer x head, at the slider's
// iteration. Token strings are user data: text nodes here, plotlyText() in Plotly.

import { layerHeadGrid } from "../heatmaps.js";
import { RED_BLUE, displayToken, draw, plotlyText, renderTokens } from "../plotting.js";

export const name = "patching";

export const card = {
  title: "Activation patching",
  button: "Patch",
  hint: [
    "The prompt is the clean run; a corrupted prompt of the same token length, and two one-token answers. " +
      "With induction-2l, try ", { code: " cat dog road sun book door cat dog" }, " against ",
    { code: " cat dog man sun book door cat dog" }, ", answers ", { code: " road" }, " and ", { code: " man" }, ".",
  ],
  fields: [
    { name: "corrupted", id: "patch-corrupted", label: "Corrupted prompt", type: "text", placeholder: "same length as the prompt" },
    { name: "correct", id: "patch-correct", label: "Correct answer", type: "text", placeholder: "one token" },
    { name: "wrong", id: "patch-wrong", label: "Wrong answer", type: "text", placeholder: "one token" },
    {
      name: "residual", id: "patch-residual", label: "Residual", type: "select", default: "pre",
      options: [["pre", "hook_resid_pre"], ["post", "hook_resid_post"]],
    },
  ],
};

/** No view state of its own in the URL. */
export const keys = {};
/** One iteration at a time: the page's iteration slider picks it. */
export const usesIteration = true;

export const view = `
  <div class="card">
    <div class="card-head"><h2>Clean and corrupted prompts</h2></div>
    <div class="tokens" data-role="patch-clean" data-testid="patch-clean"></div>
    <div class="tokens" data-role="patch-corrupted" data-testid="patch-corrupted-tokens"></div>
    <p class="hint" data-role="patch-summary" data-testid="patch-summary"></p>
  </div>
  <div class="card">
    <div class="card-head"><h2>Residual stream: layer × position</h2><span class="hint">1 = clean answer restored, 0 = no effect</span></div>
    <div id="patch-resid" data-testid="patch-resid" class="plot"></div>
  </div>
  <div class="card">
    <div class="card-head"><h2>Head outputs (hook_z): layer × head</h2></div>
    <div id="patch-heads" data-testid="patch-heads" class="plot"></div>
    <p class="formula"><span class="field-label">Formula</span> <span data-role="patch-formula"></span></p>
  </div>`;

/** The request params from the card. */
export function params(form) {
  return form.values();
}

/** Fill the card back from a loaded analysis. */
export function restore(form, analysis) {
  form.fill(analysis.params);
}

/** Blue where a patch restores the clean answer, red where it pushes further from it; white at 0. */
function scale(values) {
  const limit = Math.max(1, ...values.flat().filter((v) => v !== null).map(Math.abs));
  return { zmin: -limit, zmax: limit, colorscale: RED_BLUE };
}

/** "clean / corrupted" per position (the one token where both prompts have it). */
function positionLabels(result) {
  return result.tokens.map((token, pos) => {
    const other = result.corrupted_tokens[pos];
    return token === other ? displayToken(token) : `${displayToken(token)} / ${displayToken(other)}`;
  });
}

function residualHeatmap(el, result, values, chart) {
  const labels = positionLabels(result);
  const nLayers = values.length;
  const nPos = labels.length;
  const trace = {
    type: "heatmap",
    z: values, // [layer][pos]
    x: [...Array(nPos).keys()],
    y: [...Array(nLayers).keys()],
    customdata: values.map(() => labels.map(plotlyText)),
    ...scale(values),
    colorbar: { thickness: 12, outlinewidth: 0 },
    xgap: 1,
    ygap: 1,
    hoverongaps: false,
    hovertemplate: `L%{y} pos %{x} (%{customdata}): %{z:.3f}<extra></extra>`,
  };
  if (nLayers * nPos <= 256) Object.assign(trace, { texttemplate: "%{z:.2f}", textfont: { size: 10 } });
  const step = Math.ceil(nPos / 48);
  const ticks = [...Array(Math.ceil(nPos / step)).keys()].map((i) => i * step);
  const layout = {
    margin: { l: 56, r: 16, t: 8, b: 8 },
    xaxis: {
      title: { text: "position: clean / corrupted token" }, tickvals: ticks, ticktext: ticks.map((pos) => `${plotlyText(labels[pos])}<sub>${pos}</sub>`),
      tickangle: nPos > 12 ? -60 : 0, showgrid: false, zeroline: false, automargin: true,
    },
    yaxis: { title: { text: `layer (${plotlyText(result.residual_hook)})` }, dtick: 1, autorange: "reversed", showgrid: false, zeroline: false },
  };
  el.style.height = `${Math.max(260, Math.min(560, 140 + nLayers * 34))}px`;
  draw(el, [trace], layout, chart);
}

/** Fill the view `el` for one iteration. */
export function render(el, result, { iteration, chart }) {
  renderTokens(el.querySelector("[data-role=patch-clean]"), result.tokens);
  renderTokens(el.querySelector("[data-role=patch-corrupted]"), result.corrupted_tokens);
  const answers = `logit(“${displayToken(result.correct)}”) − logit(“${displayToken(result.wrong)}”)`;
  el.querySelector("[data-role=patch-summary]").textContent =
    `Logit difference ${answers} at the last position: clean ${result.logit_diff_clean.toFixed(4)}, ` +
    `corrupted ${result.logit_diff_corrupted.toFixed(4)}.`;
  el.querySelector("[data-role=patch-formula]").textContent = result.formula;
  residualHeatmap(el.querySelector("#patch-resid"), result, result.resid[iteration], { ...chart, part: "resid" });
  layerHeadGrid(el.querySelector("#patch-heads"), result.heads[iteration], {
    name: "restored", ...scale(result.heads[iteration]), onSelect: () => {}, chart: { ...chart, part: "heads" },
  });
}
