// The `hallucination` analysis: its card (new tokens, threshold, top-k heads), and its view: the
// generated text shaded by the signal (hover: value and the heads looking most at BOS), the signal
// over generated tokens against the threshold, and the token x head BOS heatmap. Token strings are
// user data: text nodes here, plotlyText() (through tokenLabels) in Plotly.

import { COLORS, draw, fillToken, tokenLabels } from "../plotting.js";

const TOP_HEADS = 3;

export const name = "hallucination";

export const card = {
  title: "Hallucination signal",
  button: "Generate",
  hint: [
    "Generates greedily after the prompt and shades each new token by its retrieval heads' attention to BOS. " +
      "With retrieval-2l, try ", { code: "alice red fox . bob blue owl . ? bob" }, ", then ", { code: "? dora" }, " (absent).",
  ],
  fields: [
    { name: "max_new_tokens", id: "hal-max-new", label: "New tokens", type: "number", min: 1, max: 256, default: 3 },
    { name: "threshold", id: "hal-threshold", label: "Threshold", type: "number", min: 0, max: 1, step: 0.05, default: 0.5 },
    { name: "top_k", id: "hal-top-k", label: "Top-k heads", type: "number", min: 1, max: 256, default: 4 },
    { name: "min_induction", id: "hal-min-induction", label: "Min induction", type: "number", min: 0, max: 1, step: 0.05, default: 0.1 },
  ],
};

/** No view state of its own in the URL. */
export const keys = {};
/** Every iteration is shown at once (signal per loop iteration): no iteration slider. */
export const usesIteration = false;

export const view = `
  <div class="card">
    <div class="card-head"><h2>Generated text</h2><span class="hint">hover a token: its signal and the heads most on BOS</span></div>
    <p class="warning" data-role="hal-warning" data-testid="hal-warning" role="status" hidden></p>
    <div class="hal-text" data-role="hal-text" data-testid="hal-text"></div>
    <p class="hint" data-role="hal-summary" data-testid="hal-summary"></p>
  </div>
  <div class="card">
    <div class="card-head"><h2>Signal per generated token</h2></div>
    <div id="hal-signal" data-testid="hal-signal" class="plot"></div>
    <p class="formula"><span class="field-label">Signal</span> <span data-role="hal-formula"></span></p>
    <p class="formula"><span class="field-label">All heads' BOS</span> <span data-role="hal-formula-bos"></span></p>
    <p class="formula"><span class="field-label">Lookback ratio</span> <span data-role="hal-formula-lookback"></span></p>
  </div>
  <div class="card" data-role="hal-loop-card" hidden>
    <div class="card-head"><h2>Signal per loop iteration</h2><span class="hint">does the model stop parking on BOS as it loops?</span></div>
    <div id="hal-iterations" data-testid="hal-iterations" class="plot"></div>
    <p class="formula"><span class="field-label">Per iteration</span> <span data-role="hal-formula-iterations"></span></p>
  </div>
  <div class="card">
    <div class="card-head"><h2>Attention to BOS: head × token</h2><span class="hint">★ retrieval heads</span></div>
    <div id="hal-heads" data-testid="hal-heads" class="plot"></div>
  </div>`;

/** The request params from the card. */
export function params(form) {
  return form.values();
}

/** Fill the card back from a loaded analysis. */
export function restore(form, analysis) {
  form.fill(analysis.params);
}

/** Background for a signal in [0, 1]: white to red. */
export function shade(value) {
  const v = Math.max(0, Math.min(1, Number(value) || 0));
  const channel = Math.round(255 - 155 * v);
  return `rgb(255, ${channel}, ${channel})`;
}

/** The `count` heads with the most BOS attention for generated token `index`: [{head, value}]. */
export function topHeads(result, index, count = TOP_HEADS) {
  return result.bos_by_head[index]
    .map((value, head) => ({ head: result.heads[head], value }))
    .sort((a, b) => b.value - a.value)
    .slice(0, count);
}

function tokenTitle(result, index) {
  const heads = topHeads(result, index).map(({ head, value }) => `${head} ${value.toFixed(3)}`).join(", ");
  const signal = result.signal
    ? `signal ${result.signal[index].toFixed(3)}${result.flagged[index] ? " (flagged)" : ""}`
    : "no signal (no retrieval heads)";
  return [
    `token ${index}: ${signal}`,
    `all-heads BOS ${result.bos_all[index].toFixed(3)} · lookback ${result.lookback_ratio[index].toFixed(3)}`,
    `most on BOS: ${heads}`,
  ].join("\n");
}

export function renderText(el, result) {
  const prompt = document.createElement("span");
  prompt.className = "hal-prompt";
  prompt.textContent = result.prompt_tokens.slice(1).join(""); // BOS left out
  const generated = result.tokens.map((token, index) => {
    const chip = document.createElement("span");
    chip.className = "hal-token" + (result.flagged?.[index] ? " flagged" : "");
    fillToken(chip, token); // user data: text, never HTML; a newline or tab a glyph box of its own
    if (result.signal) chip.style.background = shade(result.signal[index]); // no signal: no shade
    chip.title = tokenTitle(result, index);
    chip.dataset.index = index;
    return chip;
  });
  el.replaceChildren(prompt, ...generated);
}

function summary(result) {
  if (!result.signal) return `${result.tokens.length} generated tokens; no retrieval heads, so none is flagged.`;
  const retrieval = result.retrieval_heads.map((i) => `${result.heads[i]} (${result.induction_scores[i].toFixed(2)})`);
  const flagged = result.flagged.filter(Boolean).length;
  return `${result.tokens.length} generated tokens, ${flagged} flagged at signal ≥ ${result.params.threshold}. ` +
    `Retrieval heads (induction score): ${retrieval.join(", ")}.`;
}

function signalChart(el, result, chart) {
  const x = tokenLabels(result.tokens);
  const line = (name, y, color, dash = "solid") => ({
    name, x, y, mode: "lines+markers", line: { color, width: 2, dash },
    hovertemplate: `%{x}: ${name} %{y:.3f}<extra></extra>`,
  });
  const traces = [line("all heads' BOS", result.bos_all, COLORS.blue, "dot"), line("lookback ratio", result.lookback_ratio, COLORS.green, "dash")];
  if (result.signal) { // only where there are retrieval heads (else the result's warning says why)
    const flaggedIndex = result.flagged.map((f, i) => (f ? i : -1)).filter((i) => i >= 0);
    traces.unshift(line("signal (retrieval heads' BOS)", result.signal, COLORS.red));
    traces.push({
      name: "flagged", x: flaggedIndex.map((i) => x[i]), y: flaggedIndex.map((i) => result.signal[i]),
      mode: "markers", marker: { color: COLORS.red, size: 11, symbol: "circle-open", line: { width: 2 } },
      hoverinfo: "skip",
    });
  }
  const threshold = result.params.threshold;
  const layout = {
    margin: { l: 48, r: 16, t: 8, b: 64 },
    xaxis: { type: "category", tickangle: -40, automargin: true },
    yaxis: { title: { text: "attention" }, range: [0, 1.02], zeroline: false },
    legend: { orientation: "h", y: 1.14 },
    shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: threshold, y1: threshold, line: { color: COLORS.gray, dash: "dash", width: 1 } }],
    annotations: [{ xref: "paper", x: 1, y: threshold, text: `threshold ${threshold}`, showarrow: false, yshift: 8, xanchor: "right", font: { size: 10, color: COLORS.muted } }],
  };
  el.style.height = "300px";
  return draw(el, traces, layout, { ...chart, part: "signal" });
}

function headHeatmap(el, result, chart) {
  const retrieval = new Set(result.retrieval_heads);
  const y = result.heads.map((head, i) => (retrieval.has(i) ? `★ ${head}` : head));
  const z = result.heads.map((_, head) => result.bos_by_head.map((row) => row[head])); // [head][token]
  const trace = {
    type: "heatmap", z, x: tokenLabels(result.tokens), y, zmin: 0, zmax: 1, colorscale: "Reds",
    colorbar: { thickness: 12, outlinewidth: 0, title: { text: "BOS" } }, xgap: 1, ygap: 1,
    hovertemplate: "%{y}, %{x}: BOS %{z:.3f}<extra></extra>",
  };
  const layout = {
    margin: { l: 72, r: 16, t: 8, b: 64 },
    xaxis: { type: "category", tickangle: -40, automargin: true, showgrid: false },
    yaxis: { type: "category", autorange: "reversed", showgrid: false },
  };
  el.style.height = `${Math.max(220, Math.min(720, 80 + result.heads.length * 16))}px`;
  return draw(el, [trace], layout, { ...chart, part: "bos-heads" });
}

function iterationHeatmap(el, result, chart) {
  const bySignal = Boolean(result.signal_by_iteration); // else every head's BOS (no retrieval heads)
  const rows = bySignal ? result.signal_by_iteration : result.bos_by_iteration; // [token][iteration]
  const y = Array.from({ length: result.n_iterations }, (_, i) => `iteration ${i}`);
  const trace = {
    type: "heatmap", z: y.map((_, i) => rows.map((row) => row[i])), x: tokenLabels(result.tokens), y,
    zmin: 0, zmax: 1, colorscale: "Reds", xgap: 1, ygap: 1,
    colorbar: { thickness: 12, outlinewidth: 0, title: { text: bySignal ? "signal" : "BOS" } },
    hovertemplate: `%{y}, %{x}: ${bySignal ? "signal" : "all heads' BOS"} %{z:.3f}<extra></extra>`,
  };
  const layout = {
    margin: { l: 80, r: 16, t: 8, b: 64 },
    xaxis: { type: "category", tickangle: -40, automargin: true, showgrid: false },
    yaxis: { type: "category", autorange: "reversed", showgrid: false },
  };
  el.style.height = `${Math.max(180, Math.min(520, 90 + result.n_iterations * 22))}px`;
  return draw(el, [trace], layout, { ...chart, part: "signal-iterations" });
}

/** Fill the hallucination view `el`. */
export function render(el, result, { chart } = {}) {
  const warning = el.querySelector("[data-role=hal-warning]");
  warning.hidden = !result.warning;
  warning.textContent = result.warning ?? "";
  renderText(el.querySelector("[data-role=hal-text]"), result);
  el.querySelector("[data-role=hal-summary]").textContent = summary(result);
  el.querySelector("[data-role=hal-formula]").textContent = result.formulas.signal;
  el.querySelector("[data-role=hal-formula-bos]").textContent = result.formulas.bos_all;
  el.querySelector("[data-role=hal-formula-lookback]").textContent = result.formulas.lookback_ratio;
  signalChart(el.querySelector("#hal-signal"), result, chart);
  headHeatmap(el.querySelector("#hal-heads"), result, chart);
  const looped = result.n_iterations > 1;
  el.querySelector("[data-role=hal-loop-card]").hidden = !looped;
  if (looped) {
    el.querySelector("[data-role=hal-formula-iterations]").textContent =
      result.formulas[result.signal_by_iteration ? "signal_by_iteration" : "bos_by_iteration"];
    iterationHeatmap(el.querySelector("#hal-iterations"), result, chart);
  }
}
