// The `emergence` analysis: its card (repeated-token length, batch, seed, ICL texts and positions)
// and its view: one line per head of the chosen head score across training checkpoints, the losses
// (repeated tokens, ICL score, training loss) below, the phase change marked; clicking a point runs
// `attention` on the model at that checkpoint and opens that head's map there.

import * as api from "../api.js";
import { setRunning, showError, showProgress } from "../feedback.js";
import { COLORS, draw, onClick, plotlyText } from "../plotting.js";

export const name = "emergence";

const SCORES = { induction: "Induction", previous_token: "Previous token", duplicate_token: "Duplicate token", bos: "BOS sink" };

export const card = {
  title: "Emergence over checkpoints",
  button: "Trace checkpoints",
  hint: "Head scores, repeated-token loss and in-context learning at every training checkpoint. Runs in the background.",
  fields: [
    { name: "seq_len", id: "em-seq-len", label: "Length S", type: "number", min: 4, max: 512, default: 20 },
    { name: "batch", id: "em-batch", label: "Batch", type: "number", min: 1, max: 64, default: 10 },
    { name: "seed", id: "em-seed", label: "Seed", type: "number", min: 0, default: 0 },
    { name: "n_texts", id: "em-n-texts", label: "ICL texts", type: "number", min: 1, max: 256, default: 16 },
    { name: "icl_early", id: "em-icl-early", label: "ICL early token", type: "number", min: 1, max: 4096, default: 10 },
    { name: "icl_late", id: "em-icl-late", label: "ICL late token", type: "number", min: 2, max: 4096, default: 100 },
  ],
};

/** View state kept in the URL: which head score the trajectories show. */
export const keys = { emergence_score: { values: Object.keys(SCORES), default: "induction" } };
/** A looped model's iteration is picked by the page's slider. */
export const usesIteration = true;

export const view = `
  <div class="card">
    <div class="card-head"><h2>Heads across training</h2>
      <label>Score <select id="em-score" data-testid="em-score">${Object.entries(SCORES)
        .map(([score, label]) => `<option value="${score}">${label}</option>`).join("")}</select></label>
    </div>
    <p class="hint" data-role="em-summary" data-testid="em-summary"></p>
    <div id="em-heads" data-testid="em-heads" class="plot"></div>
    <p class="formula"><span class="field-label">Score</span> <span data-role="em-formula"></span></p>
    <div id="em-losses" data-testid="em-losses" class="plot"></div>
    <p class="formula"><span class="field-label">ICL score</span> <span data-role="em-icl-formula"></span></p>
  </div>`;

/** Wire the view's own controls once; update(changes) changes the view state. */
export function bind(el, { update }) {
  el.querySelector("#em-score").addEventListener("change", (event) => update({ emergence_score: event.target.value }));
}

/** The request params from the card. */
export function params(form) {
  return form.values();
}

/** Fill the card back from a loaded analysis. */
export function restore(form, analysis) {
  form.fill(analysis.params);
}

/** Each point's x label: its training step, "final" for the final weights (a category axis: evenly spaced). */
export function labels(result) {
  return result.steps.map((step) => (step === null ? "final" : String(step)));
}

/** One line per head: [{layer, head, y: [value per point]}] (layers without attention left out). */
export function traces(result, score, iteration) {
  const out = [];
  for (const layer of result.attention_layers) {
    for (let head = 0; head < result.n_heads; head++) {
      out.push({ layer, head, y: result.scores[score].map((point) => point[iteration][layer][head]) });
    }
  }
  return out;
}

/** A dashed vertical line at a jump, labelled. */
function marker(x, text, color) {
  return {
    shape: { type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1, line: { color, dash: "dash", width: 1.5 } },
    annotation: { xref: "x", yref: "paper", x, y: 1, text, showarrow: false, yanchor: "bottom", font: { color, size: 11 } },
  };
}

/** Fill the view: the heads' trajectories, the losses, the phase change. */
export function render(el, result, state) {
  const score = state.emergence_score;
  const iteration = Math.min(state.iteration ?? 0, result.n_iterations - 1);
  const x = labels(result);
  el.querySelector("#em-score").value = score;
  el.querySelector("[data-role=em-formula]").textContent = result.formulas[score] ?? "";
  el.querySelector("[data-role=em-icl-formula]").textContent = result.formulas.icl_score;
  const phase = result.phase_change;
  el.querySelector("[data-role=em-summary]").textContent =
    `${result.points.length - 1} checkpoints and the final weights. ` +
    (phase ? `Phase change at ${x[phase.index]}: the top induction score rises by ${phase.change.toFixed(3)}. ` : "No rise of the induction score. ") +
    "Click a point to open that head's attention at that checkpoint.";
  const marks = [phase && marker(x[phase.index], "phase change", COLORS.highlight),
    result.icl_jump && marker(x[result.icl_jump.index], "ICL drop", COLORS.muted)].filter(Boolean);
  const lines = traces(result, score, iteration);
  const plot = el.querySelector("#em-heads");
  draw(plot, lines.map((line) => ({
    type: "scatter", mode: "lines+markers", name: `L${line.layer}H${line.head}`, x, y: line.y,
    customdata: x.map((_, point) => [line.layer, line.head, point]),
    hovertemplate: `L${line.layer}H${line.head} · %{x}<br>${plotlyText(SCORES[score])}: %{y:.4f}<extra></extra>`,
  })), {
    margin: { t: 24, r: 16, b: 48, l: 56 },
    height: 420,
    xaxis: { type: "category", title: { text: "training step" } },
    yaxis: { title: { text: plotlyText(SCORES[score]) }, zeroline: false },
    shapes: marks.map((m) => m.shape),
    annotations: marks.map((m) => m.annotation),
  }, { ...state.chart, part: score });
  onClick(plot, (point) => {
    const [layer, head, index] = point.customdata;
    openHead(state.analysis, result, { layer, head, index, iteration }).catch(showError);
  });
  const losses = [
    ["repeated tokens, first copy", result.repeated_first],
    ["repeated tokens, second copy", result.repeated_second],
    ["ICL score", result.icl_score],
    ...(result.train_loss ? [["training loss", result.train_loss]] : []),
  ];
  draw(el.querySelector("#em-losses"), losses.map(([label, y]) => ({
    type: "scatter", mode: "lines+markers", name: label, x, y, hovertemplate: `${label} · %{x}: %{y:.4f}<extra></extra>`,
  })), {
    margin: { t: 24, r: 16, b: 48, l: 56 },
    height: 280,
    xaxis: { type: "category", title: { text: "training step" } },
    yaxis: { title: { text: "loss (nats)" }, zeroline: true },
    shapes: marks.map((m) => m.shape),
  }, { ...state.chart, part: "losses" });
}

/** Run `attention` on the analysis' probe text with the model at that point, then show that head there. */
async function openHead(id, result, { layer, head, index, iteration }) {
  setRunning(true);
  showProgress({ stage: "attention at the checkpoint" });
  try {
    const body = { analysis: "attention", model: result.points[index], text: result.probe_text, params: {} };
    const done = await api.untilDone(await api.createAnalysis(body), showProgress);
    const query = new URLSearchParams({ analysis: done.id, view: "attention", layer, head, iteration });
    history.pushState(null, "", `${location.pathname}?${query}`);
    window.dispatchEvent(new PopStateEvent("popstate")); // the page shows what the address bar names
  } finally {
    showProgress(null);
    setRunning(false);
  }
}
