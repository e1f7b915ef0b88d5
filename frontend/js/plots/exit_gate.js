// The `exit_gate` analysis (models that decide when to stop looping: Ouro): no fields of its own (it
// reads the prompt and the Loop card), and its view: the probability of exiting at each step for
// every token (step x token heatmap), with each token's expected exit step, the step its output comes
// from (its threshold rule), and the step from which its answer no longer changes drawn over it.

import { COLORS, draw, renderTokens, tokenLabels } from "../plotting.js";

export const name = "exit_gate";

export const card = {
  title: "Exit gate",
  button: "Read the gate",
  hint: "On the prompt: where the model's own exit gate would stop looping at each token, and where its answer settles.",
  fields: [],
};

/** No view state of its own in the URL. */
export const keys = {};
/** Every step is on the chart: no iteration slider. */
export const usesIteration = false;

export const view = `
  <div class="card">
    <div class="card-head"><h2>Tokens</h2></div>
    <div class="tokens" data-role="gate-tokens" data-testid="gate-tokens"></div>
  </div>
  <div class="card">
    <div class="card-head"><h2>Probability of exiting at each step</h2><span class="hint">hover: λ, the answer after that step</span></div>
    <p class="hint" data-role="gate-summary" data-testid="gate-summary"></p>
    <div id="gate-pdf" data-testid="gate-pdf" class="plot"></div>
    <p class="formula"><span class="field-label">Exit</span> pdf<sub>t</sub> = λ<sub>t</sub> · Π<sub>s&lt;t</sub>(1 − λ<sub>s</sub>), the last step taking the rest; expected exit step Σ t · pdf<sub>t</sub> (steps from 1); settled: the first step from which the top token equals the last step's.</p>
  </div>`;

/** The request params from the card. */
export function params(form) {
  return form.values();
}

/** Fill the card back from a loaded analysis. */
export function restore(form, analysis) {
  form.fill(analysis.params);
}

function summary(result) {
  const n = result.tokens.length;
  const mean = (values) => values.reduce((a, b) => a + b, 0) / values.length;
  const early = result.settled_step.filter((step, i) => step < result.expected_exit_step[i]).length;
  const rule = ` Its output comes from step ${mean(result.output_step).toFixed(2)} on average` +
    (result.threshold === null ? " (no threshold: the last)." : ` (threshold ${result.threshold}).`);
  return `${n} tokens, ${result.n_iterations} steps. Expected exit step ${mean(result.expected_exit_step).toFixed(2)} on average; ` +
    `the answer settles at step ${mean(result.settled_step).toFixed(2)}; at ${early} of ${n} tokens it settles before the expected exit.${rule}`;
}

/** Fill the exit-gate view `el`. */
export function render(el, result, { chart } = {}) {
  renderTokens(el.querySelector("[data-role=gate-tokens]"), result.tokens);
  el.querySelector("[data-role=gate-summary]").textContent = summary(result);
  const x = tokenLabels(result.tokens);
  const steps = Array.from({ length: result.n_iterations }, (_, i) => i + 1);
  const hover = steps.map((_, t) => result.tokens.map((_, p) =>
    `λ ${result.exit_lambda[t][p].toFixed(3)} · answer ${JSON.stringify(result.top_tokens[t][p])} (${result.top_probs[t][p].toFixed(3)})`));
  const heatmap = {
    type: "heatmap", z: result.exit_pdf, x, y: steps, zmin: 0, zmax: 1, colorscale: "Blues", xgap: 1, ygap: 1,
    customdata: hover, colorbar: { thickness: 12, outlinewidth: 0, title: { text: "p(exit)" } },
    hovertemplate: "%{x}, step %{y}: p(exit) %{z:.3f}<br>%{customdata}<extra></extra>",
  };
  const marks = (name, y, color, symbol) => ({
    name, x, y, mode: "markers+lines", line: { color, width: 1.5, dash: "dot" }, marker: { color, symbol, size: 9 },
    hovertemplate: `%{x}: ${name} %{y:.2f}<extra></extra>`,
  });
  const traces = [heatmap, marks("expected exit step", result.expected_exit_step, COLORS.red, "diamond"),
    marks("answer settles", result.settled_step, COLORS.green, "circle-open")];
  traces.push(marks("output step", result.output_step, COLORS.purple, "x"));
  const layout = {
    margin: { l: 56, r: 16, t: 8, b: 64 },
    xaxis: { type: "category", tickangle: -40, automargin: true, showgrid: false },
    yaxis: { title: { text: "loop step" }, autorange: "reversed", dtick: 1, showgrid: false },
    legend: { orientation: "h", y: 1.14 },
  };
  const plot = el.querySelector("#gate-pdf");
  plot.style.height = `${Math.max(260, Math.min(560, 120 + result.n_iterations * 36))}px`;
  return draw(plot, traces, layout, { ...chart, part: "exit-gate" });
}
