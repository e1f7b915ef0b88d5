// The `hallucination_eval` analysis: its card (rows, seed, top-k heads, an optional JSONL of rows),
// and its view: the ROC curve and AUROC of every signal on the held-out split, and the first rows
// with their answers and scores. Rows are user data: text nodes.

import { fileChooser } from "../forms.js";
import { COLORS, draw, plotlyText } from "../plotting.js";

const SIGNAL_COLORS = { bos_retrieval: COLORS.red, bos_all: COLORS.blue, lookback: COLORS.green, detector: COLORS.purple };
const NAMES = {
  bos_retrieval: "BOS, retrieval heads",
  bos_all: "BOS, all heads",
  lookback: "lookback (1 − ratio)",
  detector: "logistic regression",
};
const SHOWN_ROWS = 20;

export const name = "hallucination_eval";

let jsonl = null; // the text of the JSONL chosen instead of the built-in set; checked by the server

export const card = {
  title: "Hallucination evaluation",
  button: "Evaluate (AUROC)",
  hint: "Built-in set: key-value facts, questions about present (grounded) or absent (made-up) keys. Runs in the background.",
  fields: [
    { name: "n_examples", id: "eval-n", label: "Rows", type: "number", min: 10, max: 2000, default: 200 },
    { name: "seed", id: "eval-seed", label: "Seed", type: "number", min: 0, default: 0 },
    { name: "top_k", id: "eval-top-k", label: "Top-k heads", type: "number", min: 1, max: 256, default: 4 },
    { name: "min_induction", id: "eval-min-induction", label: "Min induction", type: "number", min: 0, max: 1, step: 0.05, default: 0.1 },
  ],
  /** The JSONL choice: its text goes in the params as it is (line-numbered errors come back as 422). */
  build(form) {
    const { file, info } = fileChooser(form, {
      prefix: "eval", accept: ".jsonl,.json,.txt", label: "Use a JSONL of context, question, label or reference…",
    });
    file.addEventListener("change", async () => {
      const chosen = file.files[0];
      if (!chosen) return;
      try {
        jsonl = await chosen.text();
        const lines = jsonl.split("\n").filter((line) => line.trim()).length;
        info.textContent = `${lines} rows from ${chosen.name} (instead of the built-in set).`;
      } catch (err) {
        form.showError(err);
      }
    });
  },
};

/** No view state of its own in the URL. */
export const keys = {};
/** Generation runs the model as it is: no iteration slider. */
export const usesIteration = false;

export const view = `
  <div class="card">
    <div class="card-head"><h2>ROC of each signal</h2></div>
    <p class="warning" data-role="eval-warning" data-testid="eval-warning" role="status" hidden></p>
    <p class="hint" data-role="eval-summary" data-testid="eval-summary"></p>
    <div id="eval-roc" data-testid="eval-roc" class="plot"></div>
  </div>
  <div class="card">
    <div class="card-head"><h2>Rows</h2><span class="hint">hover a row for its context</span></div>
    <div class="lens-wrap" data-role="eval-rows" data-testid="eval-rows"></div>
  </div>`;

/** The request params from the card: the chosen JSONL, if any, instead of the built-in set. */
export function params(form) {
  const params = form.values();
  return jsonl === null ? params : { ...params, source: "jsonl", jsonl };
}

/** Fill the card back from a loaded analysis, its JSONL included. */
export function restore(form, analysis) {
  form.fill(analysis.params);
  jsonl = analysis.params.source === "jsonl" ? analysis.params.jsonl : null;
  form.card.querySelector("#eval-file-info").textContent = jsonl === null ? "" : "The rows of this analysis (JSONL).";
}

function summary(result) {
  const accuracy = result.answer_accuracy === null ? "" : ` Grounded answers correct: ${(100 * result.answer_accuracy).toFixed(1)}%.`;
  const heads = result.retrieval_heads.map((i) => result.heads[i]).join(", ") || "none";
  return `${result.n_examples} rows, ${result.n_made_up} made up; AUROC on the ${result.n_test} held-out rows ` +
    `(the detector trained on ${result.n_train}).${accuracy} Retrieval heads: ${heads}.` + (result.note ? ` ${result.note}` : "");
}

function rocChart(el, result, chart) {
  const traces = [{
    name: "chance", x: [0, 1], y: [0, 1], mode: "lines", line: { color: COLORS.gray, dash: "dash", width: 1 }, hoverinfo: "skip",
  }];
  for (const [name, signal] of Object.entries(result.signals)) {
    if (!signal.roc) continue;
    const label = plotlyText(`${NAMES[name] ?? name} (AUROC ${signal.auroc.toFixed(3)})`);
    traces.push({
      name: label,
      x: signal.roc.fpr,
      y: signal.roc.tpr,
      customdata: signal.roc.thresholds.map((t) => (t === null ? "∞" : t.toFixed(3))),
      mode: "lines",
      line: { color: SIGNAL_COLORS[name] ?? COLORS.text, width: 2, shape: "hv" },
      hovertemplate: `${label}<br>score ≥ %{customdata}: FPR %{x:.3f}, TPR %{y:.3f}<extra></extra>`,
    });
  }
  const layout = {
    margin: { l: 56, r: 16, t: 8, b: 48 },
    xaxis: { title: { text: "false positive rate (grounded flagged)" }, range: [0, 1], zeroline: false },
    yaxis: { title: { text: "true positive rate (made up flagged)" }, range: [0, 1.02], zeroline: false },
    legend: { x: 1, xanchor: "right", y: 0, yanchor: "bottom", bgcolor: "rgba(255,255,255,0.8)" },
  };
  el.style.height = "420px";
  return draw(el, traces, layout, { ...chart, part: "roc" });
}

function cell(text, className = "") {
  const td = document.createElement("td");
  td.textContent = text; // user data: text, never HTML
  if (className) td.className = className;
  return td;
}

function rowsTable(el, result) {
  const head = document.createElement("tr");
  for (const title of ["question", "answer", "reference", "label", "split", "BOS (retrieval)"]) {
    const th = document.createElement("th");
    th.textContent = title;
    head.append(th);
  }
  const body = result.examples.slice(0, SHOWN_ROWS).map((row) => {
    const tr = document.createElement("tr");
    const score = row.scores.bos_retrieval;
    tr.append(
      cell(row.question),
      cell(row.answer),
      cell(row.reference ?? "—"),
      cell(row.label ? "made up" : "grounded", row.label ? "made-up" : ""),
      cell(row.split),
      cell(score === null ? "—" : score.toFixed(3)),
    );
    tr.title = row.context; // hover: the context (cut by the server)
    return tr;
  });
  const table = document.createElement("table");
  table.className = "hal-rows";
  table.append(head, ...body);
  el.replaceChildren(table);
}

/** Fill the hallucination_eval view `el`. */
export function render(el, result, { chart } = {}) {
  const warning = el.querySelector("[data-role=eval-warning]");
  warning.hidden = !result.warning;
  warning.textContent = result.warning ?? "";
  el.querySelector("[data-role=eval-summary]").textContent = summary(result);
  rocChart(el.querySelector("#eval-roc"), result, chart);
  rowsTable(el.querySelector("[data-role=eval-rows]"), result);
}
