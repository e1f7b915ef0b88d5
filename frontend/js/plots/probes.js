// The `probes` analysis: its card (a built-in or uploaded labelled dataset, rows, folds, position),
// and its view: probe accuracy, self-verification and task accuracy against the loop iteration on one
// chart (the probe's fold spread as error bars), and the iteration x layer heatmap of probe accuracy;
// clicking a heatmap cell picks the layer the chart follows.

import * as api from "../api.js";
import { fileChooser } from "../forms.js";
import { COLORS, draw, onClick, plotlyText } from "../plotting.js";

export const name = "probes";

let uploadedRows = null; // rows of the last parsed upload, for dataset `rows`

export const card = {
  title: "Probes",
  button: "Run probes",
  hint: "A linear probe per iteration and layer beside the model's own verdict (early exit). Runs in the background.",
  // The shipped model this card shows best (its verdict lags its probe; models/looped-lag/README.md):
  // offered where the selected model has no probes.
  model: "looped-lag",
  fields: [
    {
      name: "dataset", id: "probe-dataset", label: "Dataset", type: "select", default: "addition",
      options: [["addition", "addition"], ["arithmetic_statements", "statements"], ["rows", "uploaded"]],
    },
    { name: "n", id: "probe-n", label: "Rows", type: "number", min: 20, max: 2000, default: 400 },
    { name: "folds", id: "probe-folds", label: "Folds", type: "number", min: 2, max: 10, default: 5 },
    { name: "position", id: "probe-position", label: "Position", type: "number", min: -2000, max: 2000, default: -1 },
  ],
  /** The upload: a JSONL/CSV of text,label rows, parsed (and checked) by the server. */
  build(form) {
    const { file } = fileChooser(form, { prefix: "probe", accept: ".jsonl,.csv,.json,.txt", label: "Upload JSONL/CSV of text,label…" });
    file.addEventListener("change", () => uploadDataset(form, file.files[0]));
    form.field("dataset").addEventListener("change", (event) => {
      if (event.target.value === "rows" && !uploadedRows) file.click();
    });
  },
};

function setUploaded(form, rows, source) {
  uploadedRows = rows;
  const labels = {};
  for (const row of rows) labels[row.label] = (labels[row.label] ?? 0) + 1;
  form.card.querySelector("#probe-file-info").textContent = `${rows.length} rows from ${source}: ` +
    Object.entries(labels).map(([label, count]) => `${label} ${count}`).join(", ");
}

async function uploadDataset(form, file) {
  if (!file) return;
  try {
    const format = /\.csv$/i.test(file.name) ? "csv" : "jsonl";
    const parsed = await api.parseDataset(format, await file.text());
    setUploaded(form, parsed.rows, file.name);
    form.set("dataset", "rows");
  } catch (err) {
    form.showError(err);
  }
}

/** The request params from the card; throws when `uploaded` is chosen with no file. */
export function params(form) {
  const params = form.values();
  if (params.dataset === "rows") {
    if (!uploadedRows) throw new Error("Choose a JSONL or CSV file of text,label rows first.");
    params.rows = uploadedRows;
  }
  return params;
}

/** Fill the card back from a loaded analysis, its uploaded rows included. */
export function restore(form, analysis) {
  form.fill(analysis.params);
  if (analysis.params.rows) setUploaded(form, analysis.params.rows, "the rows of this analysis");
}

/** View state kept in the URL beside the common keys: the layer the curve follows (null: the readout;
 * `below`: the bound a loaded result sets). */
export const keys = { probe_layer: { type: "int", default: null, below: (result) => result.n_layers } };
/** Every iteration is on the chart: no iteration slider. */
export const usesIteration = false;

export const view = `
  <div class="card">
    <div class="card-head"><h2>Probe vs self-verification, per iteration</h2></div>
    <p class="hint" data-role="probe-summary" data-testid="probe-summary"></p>
    <div id="probe-curve" data-testid="probe-curve" class="plot"></div>
  </div>
  <div class="card">
    <div class="card-head"><h2>Probe accuracy: layer × iteration</h2><span class="hint">click a cell to follow its layer</span></div>
    <div id="probe-grid" data-testid="probe-grid" class="plot"></div>
  </div>`;

/** The layer the curve shows: the chosen one if valid, else the readout layer (end of the loop). */
export function probeLayer(result, layer) {
  return layer !== null && layer !== undefined && layer < result.n_layers ? layer : result.loop_layers[1];
}

function summary(result, layer) {
  const n = result.n_iterations;
  const last = n - 1;
  const parts = [
    `${result.n_rows} rows (${Object.entries(result.label_counts).map(([l, c]) => `${l}: ${c}`).join(", ")}),`,
    `${result.folds}-fold CV, read at token ${result.example_position} (“${result.example_tokens[result.example_position] ?? ""}”).`,
    `At iteration ${last}: probe ${result.probe_accuracy[last][layer].toFixed(3)} (layer ${layer})`,
  ];
  if (result.self_verification_accuracy) parts.push(`· self-verification ${result.self_verification_accuracy[last].toFixed(3)}`);
  if (result.task_accuracy) parts.push(`· task ${result.task_accuracy[last].toFixed(3)}`);
  if (result.expected_exit_step !== null && result.expected_exit_step !== undefined) {
    parts.push(`· the exit gate stops at step ${result.expected_exit_step.toFixed(2)} on average (iteration ${(result.expected_exit_step - 1).toFixed(2)})`);
  }
  parts.push(`· chance ${result.chance.toFixed(2)}.`);
  if (result.self_verification_note) parts.push(result.self_verification_note);
  return parts.join(" ");
}

function curve(el, result, layer, chart) {
  const x = [...Array(result.n_iterations).keys()];
  const traces = [
    {
      name: plotlyText(`probe, layer ${layer}`),
      x,
      y: result.probe_accuracy.map((row) => row[layer]),
      error_y: { type: "data", array: result.probe_accuracy_std.map((row) => row[layer]), visible: true, thickness: 1.2 },
      mode: "lines+markers",
      line: { color: COLORS.blue, width: 2.5 },
      hovertemplate: "iteration %{x}: probe %{y:.3f} ± %{error_y.array:.3f}<extra></extra>",
    },
  ];
  if (result.self_verification_accuracy) {
    traces.push({
      name: "self-verification",
      x,
      y: result.self_verification_accuracy,
      mode: "lines+markers",
      line: { color: COLORS.red, width: 2.5 },
      hovertemplate: "iteration %{x}: self-verification %{y:.3f}<extra></extra>",
    });
  }
  if (result.task_accuracy) {
    traces.push({
      name: "task accuracy",
      x,
      y: result.task_accuracy,
      mode: "lines+markers",
      line: { color: COLORS.green, width: 2, dash: "dot" },
      hovertemplate: "iteration %{x}: task %{y:.3f}<extra></extra>",
    });
  }
  if (result.exit_pdf) { // the model's own exit gate (Ouro): where it would stop looping
    traces.unshift({
      name: "p(exit at this iteration)",
      type: "bar",
      x,
      y: result.exit_pdf,
      marker: { color: COLORS.purple, opacity: 0.25 },
      hovertemplate: "iteration %{x}: the gate exits here with p %{y:.3f}<extra></extra>",
    });
  }
  const layout = {
    margin: { l: 56, r: 16, t: 8, b: 44 },
    xaxis: { title: { text: "loop iteration" }, dtick: 1, zeroline: false },
    yaxis: { title: { text: "accuracy" }, range: [0, 1.02], zeroline: false },
    legend: { orientation: "h", y: 1.12 },
    shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: result.chance, y1: result.chance,
               line: { color: COLORS.gray, dash: "dash", width: 1 } }],
    annotations: [{ xref: "paper", x: 1, y: result.chance, text: "chance", showarrow: false, yshift: 8,
                    xanchor: "right", font: { size: 10, color: COLORS.muted } }],
  };
  el.style.height = "320px";
  draw(el, traces, layout, { ...chart, part: `curve-L${layer}` });
}

function grid(el, result, layer, onSelectLayer, chart) {
  const z = [...Array(result.n_layers).keys()].map((l) => result.probe_accuracy.map((row) => row[l])); // [layer][iteration]
  const trace = {
    type: "heatmap",
    z,
    x: [...Array(result.n_iterations).keys()],
    y: [...Array(result.n_layers).keys()],
    zmin: Math.min(result.chance, 0.5),
    zmax: 1,
    colorscale: "Viridis",
    colorbar: { thickness: 12, outlinewidth: 0 },
    xgap: 1,
    ygap: 1,
    hovertemplate: "iteration %{x}, layer %{y}: probe %{z:.3f}<extra></extra>",
  };
  if (z.length * trace.x.length <= 256) Object.assign(trace, { texttemplate: "%{z:.2f}", textfont: { size: 10 } });
  const layout = {
    margin: { l: 56, r: 16, t: 8, b: 44 },
    xaxis: { title: { text: "loop iteration" }, dtick: 1, showgrid: false, zeroline: false },
    yaxis: { title: { text: "layer" }, dtick: 1, autorange: "reversed", showgrid: false, zeroline: false },
    shapes: [{ type: "rect", xref: "paper", x0: 0, x1: 1, y0: layer - 0.5, y1: layer + 0.5, line: { color: COLORS.highlight, width: 2 } }],
  };
  el.style.height = `${Math.max(200, Math.min(520, 70 + result.n_layers * 30))}px`;
  draw(el, [trace], layout, { ...chart, part: "grid" });
  onClick(el, (point) => onSelectLayer(Number(point.y)));
}

/** Fill the probes view `el`; a click on the heatmap calls update({probe_layer}), the layer the curve follows. */
export function render(el, result, { probe_layer = null, update = () => {}, chart }) {
  const layer = probeLayer(result, probe_layer);
  el.querySelector("[data-role=probe-summary]").textContent = summary(result, layer);
  curve(el.querySelector("#probe-curve"), result, layer, chart);
  grid(el.querySelector("#probe-grid"), result, layer, (picked) => update({ probe_layer: picked }), chart);
}
