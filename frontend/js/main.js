// The page: wires the inputs to the API, the URL state to the views, and shows every error.

import * as api from "./api.js";
import { patternHeatmap, plotlyReady } from "./heatmaps.js";
import * as attention from "./plots/attention.js";
import * as compare from "./plots/compare.js";
import * as hallucination from "./plots/hallucination.js";
import * as hallucinationEval from "./plots/hallucination_eval.js";
import * as headScores from "./plots/head_scores.js";
import * as logitLens from "./plots/logit_lens.js";
import * as probes from "./plots/probes.js";
import { initialState, readUrl, writeUrl } from "./state.js";

const RENDERERS = {
  attention, head_scores: headScores, probes, logit_lens: logitLens, hallucination, hallucination_eval: hallucinationEval,
}; // registry id -> renderer
const VIEW_ELEMENTS = {
  attention: "view-attention", head_scores: "view-head-scores", probes: "view-probes", logit_lens: "view-logit-lens",
  hallucination: "view-hallucination", hallucination_eval: "view-hallucination-eval",
};
const $ = (id) => document.getElementById(id);

let state = initialState();
let current = null; // the loaded, done analysis shown now
const thumbnailCache = new Map(); // `${id}/${iteration}` -> [layer][head][row][col]
let detailRequest = 0; // only the latest head request may draw
let uploadedRows = null; // rows of the last parsed upload, for probes on `rows`
let evalJsonl = null; // the text of the last JSONL chosen for hallucination_eval

// ---- feedback: errors and progress -------------------------------------------------------

function showError(err) {
  if (err?.code === "unauthorized") $("token-card").hidden = false;
  $("error-message").textContent = err?.message || String(err);
  $("error").dataset.code = err?.code || "error";
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-message").textContent = "";
}

function showProgress(progress) {
  $("progress-box").hidden = !progress;
  if (!progress) return;
  const bar = $("progress");
  const percent = Number(progress.percent);
  if (Number.isFinite(percent) && percent > 0) {
    bar.max = 100;
    bar.value = Math.min(100, percent); // the API reports 0..100
  } else {
    bar.removeAttribute("value"); // indeterminate
  }
  const queued = progress.queue_position ? ` (${progress.queue_position} ahead in the queue)` : "";
  $("progress-label").textContent = `${progress.stage || "working"}…${queued}`;
}

function setRunning(running) {
  for (const id of ["run-attention", "run-head-scores", "run-probes", "run-logit-lens", "run-hallucination", "run-hallucination-eval"]) {
    $(id).disabled = running;
  }
}

// ---- inputs --------------------------------------------------------------------------------

function fillModels(models) {
  const select = $("model-select");
  select.replaceChildren(
    ...models.map((model) => new Option(model.id, model.id, model.default, model.default)),
  );
  select.models = models;
  describeModel();
}

function describeModel() {
  const model = ($("model-select").models || []).find((m) => m.id === $("model-select").value);
  const loops = model && model.n_iterations > 1 ? ` · ${model.n_iterations} loop iterations` : "";
  $("model-info").textContent = model
    ? `${model.n_layers} layers × ${model.n_heads} heads · context ${model.n_ctx}${loops}. ${model.description}`
    : "No model available: add one to LOUPE_MODEL_DIRS.";
}

function restoreInputs(analysis) {
  const select = $("model-select");
  if (![...select.options].some((o) => o.value === analysis.model)) select.append(new Option(analysis.model, analysis.model));
  select.value = analysis.model;
  describeModel();
  if (analysis.analysis === "attention") $("prompt").value = analysis.text ?? "";
  if (analysis.analysis === "head_scores") {
    $("seq-len").value = analysis.params.seq_len;
    $("batch").value = analysis.params.batch;
    $("seed").value = analysis.params.seed;
  }
  if (analysis.analysis === "logit_lens") {
    $("prompt").value = analysis.text ?? "";
    $("lens-position").value = analysis.params.position;
  }
  if (analysis.analysis === "probes") {
    const { dataset, n, folds, position, rows } = analysis.params;
    Object.assign($("probe-dataset"), { value: dataset });
    Object.assign($("probe-n"), { value: n });
    Object.assign($("probe-folds"), { value: folds });
    Object.assign($("probe-position"), { value: position });
    if (rows) setUploaded(rows, "the rows of this analysis");
  }
  if (analysis.analysis === "hallucination") {
    $("prompt").value = analysis.text ?? "";
    $("hal-max-new").value = analysis.params.max_new_tokens;
    $("hal-threshold").value = analysis.params.threshold;
    $("hal-top-k").value = analysis.params.top_k;
  }
  if (analysis.analysis === "hallucination_eval") {
    $("eval-n").value = analysis.params.n_examples;
    $("eval-seed").value = analysis.params.seed;
    $("hal-top-k").value = analysis.params.top_k;
    evalJsonl = analysis.params.source === "jsonl" ? analysis.params.jsonl : null;
    $("eval-file-info").textContent = evalJsonl === null ? "" : "The rows of this analysis (JSONL).";
  }
  const loop = analysis.params?.loop ?? {};
  $("loop-start").value = loop.start ?? "";
  $("loop-end").value = loop.end ?? "";
  $("loop-times").value = loop.times ?? "";
}

/** `params.loop` from the Loop card: {} when it is empty (the model as it is). */
function loopParams() {
  const loop = {};
  for (const [key, id] of [["start", "loop-start"], ["end", "loop-end"], ["times", "loop-times"]]) {
    if ($(id).value !== "") loop[key] = Number($(id).value);
  }
  return Object.keys(loop).length ? { loop } : {};
}

function probeParams() {
  const params = {
    dataset: $("probe-dataset").value,
    n: Number($("probe-n").value),
    folds: Number($("probe-folds").value),
    position: Number($("probe-position").value),
    ...loopParams(),
  };
  if (params.dataset === "rows") {
    if (!uploadedRows) throw new Error("Choose a JSONL or CSV file of text,label rows first.");
    params.rows = uploadedRows;
  }
  return params;
}

function setUploaded(rows, name) {
  uploadedRows = rows;
  const labels = {};
  for (const row of rows) labels[row.label] = (labels[row.label] ?? 0) + 1;
  $("probe-file-info").textContent = `${rows.length} rows from ${name}: ` +
    Object.entries(labels).map(([label, count]) => `${label} ${count}`).join(", ");
}

async function uploadDataset(file) {
  if (!file) return;
  try {
    const format = /\.csv$/i.test(file.name) ? "csv" : "jsonl";
    const parsed = await api.parseDataset(format, await file.text());
    setUploaded(parsed.rows, file.name);
    $("probe-dataset").value = "rows";
  } catch (err) {
    showError(err);
  }
}

function hallucinationParams() {
  return {
    max_new_tokens: Number($("hal-max-new").value), threshold: Number($("hal-threshold").value), top_k: Number($("hal-top-k").value),
  };
}

function evalParams() {
  const params = { n_examples: Number($("eval-n").value), seed: Number($("eval-seed").value), top_k: Number($("hal-top-k").value) };
  return evalJsonl === null ? params : { ...params, source: "jsonl", jsonl: evalJsonl };
}

async function chooseEvalFile(file) {
  if (!file) return;
  evalJsonl = await file.text(); // checked by the server: line-numbered errors come back as 422
  const lines = evalJsonl.split("\n").filter((line) => line.trim()).length;
  $("eval-file-info").textContent = `${lines} rows from ${file.name} (instead of the built-in set).`;
}

function headScoreParams() {
  return { seq_len: Number($("seq-len").value), batch: Number($("batch").value), seed: Number($("seed").value) };
}

// ---- state -> views --------------------------------------------------------------------------

/** Keep the state inside the analysis' shape: a stale or hand-edited URL must not break the view. */
function clampState() {
  const { n_iterations, n_layers, n_heads } = current.result;
  state.view = current.analysis;
  state.iteration = Math.min(state.iteration, n_iterations - 1);
  if (state.layer !== null && (state.layer >= n_layers || state.head >= n_heads)) state.layer = state.head = null;
  if (n_heads === undefined || current.analysis.startsWith("hallucination")) state.layer = state.head = null; // no patterns stored
  if (state.compare !== null && (state.layer === null || state.compare >= n_iterations)) state.compare = null;
  if (state.probe_layer !== null && state.probe_layer >= n_layers) state.probe_layer = null;
}

function selected() {
  return state.layer === null ? null : { layer: state.layer, head: state.head };
}

async function thumbnails() {
  const key = `${current.id}/${state.iteration}`;
  if (!thumbnailCache.has(key)) thumbnailCache.set(key, await api.getThumbnails(current.id, state.iteration));
  return thumbnailCache.get(key);
}

/** The view's overview; its thumbnails are fetched once `detail` (the open head, if any) is drawn:
 * a shared link is about its head, and the previews would compete with it for the page's thread. */
function renderOverview(detail) {
  const view = state.view;
  const el = $(VIEW_ELEMENTS[view]);
  const options = {
    ...state, selected: selected(), onSelect: selectHead, onSelectLayer: (layer) => update({ probe_layer: layer }),
  };
  RENDERERS[view].render(el, current.result, options);
  performance.mark("loupe:overview-drawn");
  if (view === "attention") {
    const shown = `${current.id}/${state.iteration}`;
    detail
      .then(thumbnails)
      .then((thumbs) => {
        const stillShown = current && `${current.id}/${state.iteration}` === shown;
        if (stillShown) RENDERERS[view].render(el, current.result, { ...options, thumbnails: thumbs });
      })
      .catch(showError);
  }
}

async function renderDetail() {
  const panel = $("head-detail");
  panel.hidden = state.layer === null;
  if (state.layer === null) return;
  const { layer, head, iteration } = state;
  const id = current.id;
  const loops = current.result.n_iterations > 1 ? `, iteration ${iteration}` : "";
  $("head-title").textContent = `Layer ${layer}, head ${head}${loops}`;
  $("head-subtitle").textContent = current.analysis === "head_scores"
    ? "On the first test sequence: BOS, S random tokens, then the same S again."
    : "On the prompt. Rows: query tokens; columns: the key tokens they attend to.";
  const plot = $("pattern-plot");
  plot.dataset.ready = "false";
  const request = ++detailRequest;
  try {
    const rows = await api.getPattern(id, { layer, head, iteration });
    if (request !== detailRequest) return;
    performance.mark("loupe:pattern-decoded"); // read by bench/paint.py: where a slow paint goes
    await patternHeatmap(plot, current.result.tokens, rows);
    performance.mark("loupe:pattern-drawn");
    Object.assign(plot.dataset, { analysis: id, layer, head, iteration, ready: "true" });
    $("compare").hidden = state.compare === null;
    if (state.compare !== null) {
      const b = state.compare;
      const rowsB = await api.getPattern(id, { layer, head, iteration: b });
      if (request !== detailRequest) return;
      await compare.render($("compare"), current.result.tokens, { a: iteration, b, rowsA: rows, rowsB });
      Object.assign($("compare").dataset, { a: iteration, b, ready: "true" });
    }
  } catch (err) {
    if (request === detailRequest) showError(err);
  }
}

function render() {
  const shown = Boolean(current);
  $("empty").hidden = shown;
  $("copy-link").disabled = !shown;
  for (const [view, id] of Object.entries(VIEW_ELEMENTS)) $(id).hidden = !shown || state.view !== view;
  const iterations = current?.result.n_iterations ?? 1;
  $("iteration-control").hidden = iterations <= 1;
  $("iteration").max = iterations - 1;
  $("iteration").value = state.iteration;
  $("iteration-value").textContent = state.iteration;
  $("compare-control").hidden = iterations <= 1;
  $("compare-on").checked = state.compare !== null;
  $("compare-iteration").max = iterations - 1;
  $("compare-iteration").value = state.compare ?? Math.min(iterations - 1, state.iteration + 1);
  $("compare-iteration").disabled = state.compare === null;
  $("compare-value").textContent = $("compare-iteration").value;
  if (state.compare === null) $("compare").hidden = true;
  if (!shown) {
    $("head-detail").hidden = true;
    return;
  }
  renderOverview(renderDetail()); // renderDetail catches its own errors
}

function update(changes, { push = false } = {}) {
  Object.assign(state, changes);
  writeUrl(state, { push });
  render();
}

function selectHead(layer, head) {
  update({ layer, head }, { push: true });
}

// ---- actions -------------------------------------------------------------------------------

async function run(body) {
  clearError();
  setRunning(true);
  showProgress({ stage: "submitting" });
  try {
    const analysis = await api.untilDone(await api.createAnalysis(body), showProgress);
    current = analysis;
    state.analysis = analysis.id;
    clampState();
    writeUrl(state, { push: true });
    render();
  } catch (err) {
    showError(err);
  } finally {
    showProgress(null);
    setRunning(false);
  }
}

/** Show what the address bar names: the cached analysis by id (GET, never a recomputation). */
async function applyUrl() {
  const next = readUrl();
  if (!next.analysis) {
    current = null;
    state = next;
    render();
    return;
  }
  if (current?.id !== next.analysis) {
    showProgress({ stage: "loading" });
    try {
      const loaded = await api.untilDone(await api.getAnalysis(next.analysis), showProgress);
      if (!RENDERERS[loaded.analysis]) throw new Error(`This page cannot show "${loaded.analysis}" analyses yet.`);
      current = loaded;
      restoreInputs(current);
    } catch (err) {
      current = null;
      showError(err);
    } finally {
      showProgress(null);
    }
  }
  state = next;
  if (current) {
    clampState();
    writeUrl(state);
  }
  render();
}

async function copyLink() {
  const url = location.href;
  const button = $("copy-link");
  let copied = false;
  try {
    await navigator.clipboard.writeText(url);
    copied = true;
  } catch {
    const area = Object.assign(document.createElement("textarea"), { value: url, readOnly: true });
    document.body.append(area);
    area.select();
    copied = document.execCommand("copy"); // older browsers and non-secure origins
    area.remove();
  }
  button.textContent = copied ? "Copied" : "Copy failed";
  if (!copied) showError(new Error(`Copy this link by hand: ${url}`));
  setTimeout(() => (button.textContent = "Copy link"), 1600);
}

function bind() {
  $("run-attention").addEventListener("click", () =>
    run({ analysis: "attention", model: $("model-select").value, text: $("prompt").value, params: loopParams() }));
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("run-attention").click();
  });
  $("run-head-scores").addEventListener("click", () =>
    run({ analysis: "head_scores", model: $("model-select").value, params: { ...headScoreParams(), ...loopParams() } }));
  $("run-probes").addEventListener("click", () => {
    let params;
    try {
      params = probeParams();
    } catch (err) {
      showError(err);
      return;
    }
    run({ analysis: "probes", model: $("model-select").value, params });
  });
  $("run-logit-lens").addEventListener("click", () =>
    run({
      analysis: "logit_lens", model: $("model-select").value, text: $("prompt").value,
      params: { position: Number($("lens-position").value), ...loopParams() },
    }));
  $("run-hallucination").addEventListener("click", () =>
    run({ analysis: "hallucination", model: $("model-select").value, text: $("prompt").value, params: hallucinationParams() }));
  $("run-hallucination-eval").addEventListener("click", () =>
    run({ analysis: "hallucination_eval", model: $("model-select").value, params: evalParams() }));
  $("eval-upload").addEventListener("click", () => $("eval-file").click());
  $("eval-file").addEventListener("change", (event) => chooseEvalFile(event.target.files[0]).catch(showError));
  $("probe-dataset").addEventListener("change", (event) => {
    if (event.target.value === "rows" && !uploadedRows) $("probe-file").click();
  });
  $("probe-upload").addEventListener("click", () => $("probe-file").click());
  $("probe-file").addEventListener("change", (event) => uploadDataset(event.target.files[0]));
  $("compare-on").addEventListener("change", (event) =>
    update({ compare: event.target.checked ? Number($("compare-iteration").value) : null }));
  $("compare-iteration").addEventListener("input", (event) => update({ compare: Number(event.target.value) }));
  $("model-select").addEventListener("change", describeModel);
  $("stat-select").addEventListener("change", (event) => update({ stat: event.target.value }));
  for (const button of document.querySelectorAll("[data-score]")) {
    button.addEventListener("click", () => update({ score: button.dataset.score }));
  }
  $("iteration").addEventListener("input", (event) => update({ iteration: Number(event.target.value) }));
  $("close-head").addEventListener("click", () => update({ layer: null, head: null }, { push: true }));
  $("error-close").addEventListener("click", clearError);
  $("save-token").addEventListener("click", () => {
    api.setToken($("api-token").value.trim());
    $("api-token").value = "";
    $("token-card").hidden = true;
    clearError();
  });
  $("copy-link").addEventListener("click", copyLink);
  window.addEventListener("popstate", applyUrl);
  window.addEventListener("unhandledrejection", (event) => showError(event.reason));
}

async function boot() {
  performance.mark("loupe:boot");
  bind();
  // A shared link names its head: fetch the pattern now, alongside the model list and the
  // analysis, instead of after them (renderDetail then finds it in flight or arrived).
  const linked = readUrl();
  if (linked.analysis && linked.layer !== null) {
    api.getPattern(linked.analysis, linked).catch(() => {}); // errors surface when the view asks again
  }
  try {
    fillModels(await api.listModels());
  } catch (err) {
    showError(err);
  }
  try {
    await plotlyReady(); // every view draws with Plotly
    performance.mark("loupe:plotly-ready");
  } catch (err) {
    showError(err);
    return;
  }
  await applyUrl();
}

boot();
