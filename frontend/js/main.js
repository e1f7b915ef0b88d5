// The page: a card and a view per plot module (js/plots/index.js), wired to the API and the URL
// state; cards and controls show only where they apply (capability flags from the API); every
// error is shown. Nothing here is about one analysis: that is its plot module's.

import * as api from "./api.js";
import * as compare from "./compare.js";
import * as exportMenu from "./exports.js";
import { clearError, setRunning, showError, showNotice, showProgress } from "./feedback.js";
import { buildCard, runButtonId } from "./forms.js";
import { clearPattern, patternHeatmap } from "./heatmaps.js";
import { refreshHistory } from "./history.js";
import * as longMap from "./longmap.js";
import * as modelCard from "./modelcard.js";
import * as pair from "./pair.js";
import { fileName, plotlyReady } from "./plotting.js";
import { BY_NAME, PLOTS } from "./plots/index.js";
import * as promptCard from "./prompt.js";
import { clampKeys, initialState, readUrl, writeUrl } from "./state.js";
import * as tokenView from "./tokenview.js";

// Needs that are inputs (the backend's INPUT_NEEDS); every other need is a model capability.
const INPUT_NEEDS = new Set(["text", "labelled_data"]);
const EVICTED_NOTE = "This result had been evicted from the cache and was recomputed.";
const $ = (id) => document.getElementById(id);

let state = initialState();
let current = null; // the loaded, done analysis shown now
let other = null; // {id, analysis, error}: the second prompt's analysis (state.other), loaded or why not
let types = null; // name -> analysis type (/api/analysis_types); null while unknown
const forms = new Map(); // name -> its card's Form
const views = new Map(); // name -> its view's <section>
const thumbnailCache = new Map(); // `${id}/${iteration}` -> [layer][head][row][col]
let detailRequest = 0; // only the latest head request may draw
let early = null; // {id, found}: the analysis a shared link names, asked for at boot beside the model list

// ---- the model, and what applies to it ----------------------------------------------------

function fillModels(models) {
  const select = $("model-select");
  select.replaceChildren(
    ...models.map((model) => new Option(model.id, model.id, model.default, model.default)),
  );
  select.models = models;
  fillCheckpoints();
  describeModel();
}

/** The selected model's checkpoints (training steps), with `step` chosen ("": its final weights). */
function fillCheckpoints(step = "") {
  const steps = (($("model-select").models || []).find((m) => m.id === $("model-select").value)?.checkpoints ?? []).map(String);
  $("checkpoint-field").hidden = !steps.length;
  $("checkpoint-select").replaceChildren(new Option("final weights", ""), ...steps.map((s) => new Option(`step ${s}`, s)));
  $("checkpoint-select").value = steps.includes(step) ? step : "";
}

/** The model id the page runs on: the selected model, `<id>@<step>` at a chosen checkpoint. */
function modelId() {
  const step = $("checkpoint-select").value;
  return step ? `${$("model-select").value}@${step}` : $("model-select").value;
}

/** Select a model id; `<id>@<step>` of a listed model selects the model and that checkpoint. */
function selectModel(id) {
  const select = $("model-select");
  const listed = (select.models || []).map((m) => m.id);
  const at = id.lastIndexOf("@");
  const [base, step] = !listed.includes(id) && at > 0 && listed.includes(id.slice(0, at)) ? [id.slice(0, at), id.slice(at + 1)] : [id, ""];
  if (![...select.options].some((o) => o.value === base)) select.append(new Option(base, base));
  select.value = base;
  fillCheckpoints(step);
}

/** The selected model as /api/models lists it; at a checkpoint, that checkpoint (its own id, and no
 * analysis over checkpoints: that runs on the final weights). */
function selectedModel() {
  const model = ($("model-select").models || []).find((m) => m.id === $("model-select").value);
  const step = $("checkpoint-select").value;
  if (!model || !step) return model;
  return { ...model, id: modelId(), step: Number(step), checkpoints: null, capabilities: model.capabilities.filter((c) => c !== "checkpoints") };
}

function describeModel() {
  const model = selectedModel();
  const loops = model && model.n_iterations > 1 ? ` · ${model.n_iterations} loop iterations` : "";
  const hybrid = model?.attention_layers && model.attention_layers.length < model.n_layers
    ? ` · attention in layers ${model.attention_layers.join(", ")} only` : "";
  const step = model?.step != null ? ` · checkpoint at training step ${model.step}` : "";
  $("model-info").textContent = model
    ? `${model.n_layers} layers × ${model.n_heads} heads · context ${model.n_ctx}${loops}${hybrid}${step}. ${model.description}`
    : "No model available: add one to LOUPE_MODEL_DIRS.";
  $("model-warning").hidden = !model?.warnings?.length;
  $("model-warning").textContent = (model?.warnings ?? []).join(" ");
  modelCard.setModel(model);
  promptCard.setModel(model);
  showCards();
}

/** Whether an analysis type applies to a model: every need that is no input is among its capabilities. */
function applies(type, model) {
  const capabilities = model?.capabilities ?? [];
  return type.needs.every((need) => INPUT_NEEDS.has(need) || capabilities.includes(need));
}

/** Show the cards whose analysis applies to the selected model, and the shared Prompt and Loop
 * cards only where a shown card takes them. Before the types are known (or if they failed to load)
 * every card shows: the server still refuses what does not apply. */
function showCards() {
  const model = selectedModel();
  let text = false;
  let loop = false;
  for (const [name, form] of forms) {
    const type = types?.get(name);
    const shown = types === null || (type !== undefined && applies(type, model));
    form.card.hidden = !shown;
    text ||= shown && (type?.takes_text ?? true);
    loop ||= shown && (type?.takes_loop ?? true);
  }
  $("prompt-card").hidden = !text;
  // A natively looped model takes only its loop count (none where its config fixes it: HRM's cycles);
  // one that draws random numbers, a seed too.
  const capabilities = model?.capabilities ?? [];
  const native = capabilities.includes("loop");
  $("loop-card").hidden = !loop || (Boolean(model?.fixed_loop) && !capabilities.includes("seeded"));
  $("loop-times").closest("label").hidden = Boolean(model?.fixed_loop);
  for (const label of document.querySelectorAll("#loop-card [data-role=retrofit]")) label.hidden = native;
  document.querySelector("#loop-card [data-role=seeded]").hidden = !capabilities.includes("seeded");
  document.querySelector("#loop-card [data-role=loop-hint]").textContent = native
    ? `Applies to every run that takes a loop. ${model.id} loops natively: Times is its loop count (trained: ${model.n_iterations}).` +
      (capabilities.includes("seeded") ? " Its forward draws random numbers (an initial state): Seed fixes them." : "")
    : "Applies to every run that takes a loop. A plain model repeats layers Start..End Times times.";
  offerModels(model);
}

/** Under the model, a link to the model a hidden card names as its own (`card.model`, when listed):
 * the page says where that analysis applies instead of only hiding it. */
function offerModels(model) {
  const listed = new Set(($("model-select").models || []).map((m) => m.id));
  const links = [];
  for (const [name, form] of forms) {
    const { title, model: own } = BY_NAME.get(name).card;
    if (!form.card.hidden || !listed.has(own) || own === model?.id) continue;
    const link = Object.assign(document.createElement("button"), { type: "button", className: "link", textContent: `${title}: use ${own}` });
    link.dataset.testid = `use-model-${name}`;
    link.addEventListener("click", () => {
      $("model-select").value = own;
      $("model-select").dispatchEvent(new Event("change"));
    });
    links.push(link);
  }
  $("model-offers").replaceChildren(...links);
  $("model-offers").hidden = !links.length;
}

const storesPatterns = (name) => types?.get(name)?.stores_patterns ?? false;
const takesText = (name) => types?.get(name)?.takes_text ?? true;

// ---- inputs --------------------------------------------------------------------------------

/** `params.loop` from the Loop card: {} when it is empty (the model as it is). */
function loopParams() {
  const loop = {};
  for (const [key, id] of [["start", "loop-start"], ["end", "loop-end"], ["times", "loop-times"], ["seed", "loop-seed"]]) {
    if ($(id).value !== "" && !$(id).closest("label").hidden) loop[key] = Number($(id).value);
  }
  return Object.keys(loop).length ? { loop } : {};
}

/** The request a card makes: its module's params, plus the shared prompt and loop where its type takes them. */
function request(plot, form) {
  const type = types?.get(plot.name);
  const params = { ...plot.params(form), ...(type?.takes_loop ? loopParams() : {}) };
  const body = { analysis: plot.name, model: modelId(), params };
  if (type?.takes_text ?? true) body.text = $("prompt").value; // the server drops text where none is taken
  return body;
}

/** Fill the inputs back from a loaded analysis: model, prompt, loop, and its card's own fields. */
function restoreInputs(analysis) {
  selectModel(analysis.model);
  describeModel();
  if (analysis.text !== null && analysis.text !== undefined) $("prompt").value = analysis.text;
  promptCard.scheduleCount(0);
  if (types?.get(analysis.analysis)?.takes_loop) {
    const loop = analysis.params?.loop ?? {};
    $("loop-start").value = loop.start ?? "";
    $("loop-end").value = loop.end ?? "";
    $("loop-times").value = loop.times ?? "";
    $("loop-seed").value = loop.seed ?? "";
  }
  BY_NAME.get(analysis.analysis).restore(forms.get(analysis.analysis), analysis);
}

// ---- state -> views --------------------------------------------------------------------------

/** Keep the state inside the analysis' shape: a stale or hand-edited URL must not break the view. */
function clampState() {
  const { n_layers, n_heads } = current.result;
  const n_iterations = current.result.n_iterations ?? 1;
  const plot = BY_NAME.get(current.analysis);
  const stores = storesPatterns(current.analysis);
  state.view = current.analysis;
  state.iteration = plot.usesIteration || stores ? Math.min(state.iteration, n_iterations - 1) : 0;
  const attending = current.result.attention_layers;
  const noSuchHead = state.layer !== null && (state.layer >= n_layers || state.head >= n_heads || (attending && !attending.includes(state.layer)));
  if (!stores || n_heads === undefined || noSuchHead) {
    state.layer = state.head = null; // no patterns stored, or no such head
  }
  if (state.compare !== null && (state.layer === null || state.compare >= n_iterations)) state.compare = null;
  const hasHead = ({ layer, head }) => layer < n_layers && head < n_heads && (!attending || attending.includes(layer));
  state.pins = state.layer === null ? [] : state.pins.filter(hasHead);
  const n = current.result.tokens?.length ?? 0;
  if (state.layer === null || state.token >= n) state.token = null;
  if (state.layer === null || (state.zoom && (state.zoom[1] > n || state.zoom[3] > n))) state.zoom = null;
  clampKeys(state, current.result);
}

function selected() {
  return state.layer === null ? null : { layer: state.layer, head: state.head };
}

/** The parts of a PNG name that say which view a chart shows (plotting.js fileName). */
function chartName({ head = false } = {}) {
  const loops = (current.result.n_iterations ?? 1) > 1;
  const name = { model: current.model, analysis: current.analysis };
  if (loops && (head || BY_NAME.get(current.analysis).usesIteration)) name.iteration = state.iteration;
  if (head) Object.assign(name, { layer: state.layer, head: state.head });
  return name;
}

async function thumbnails() {
  const key = `${current.id}/${state.iteration}`;
  if (!thumbnailCache.has(key)) thumbnailCache.set(key, await api.getThumbnails(current.id, state.iteration));
  return thumbnailCache.get(key);
}

/** The view's overview; its thumbnails, if it shows them, are fetched once `detail` (the open head,
 * if any) is drawn: a shared link is about its head, and the previews would compete with it. */
function renderOverview(detail) {
  const plot = BY_NAME.get(state.view);
  const el = views.get(state.view);
  const options = { ...state, selected: selected(), onSelect: selectHead, update, chart: chartName() };
  plot.render(el, current.result, options);
  performance.mark("loupe:overview-drawn");
  if (!plot.usesThumbnails) return;
  const shown = `${current.id}/${state.iteration}`;
  detail
    .then(thumbnails)
    .then((thumbs) => {
      const stillShown = current && `${current.id}/${state.iteration}` === shown;
      if (stillShown) plot.render(el, current.result, { ...options, thumbnails: thumbs });
    })
    .catch(showError);
}

async function renderDetail() {
  const panel = $("head-detail");
  panel.hidden = state.layer === null;
  if (state.layer === null) return;
  const { layer, head, iteration } = state;
  const id = current.id;
  const loops = current.result.n_iterations > 1 ? `, iteration ${iteration}` : "";
  $("head-title").textContent = `Layer ${layer}, head ${head}${loops}`;
  $("head-subtitle").textContent = BY_NAME.get(current.analysis).headNote ?? "";
  const plot = $("pattern-plot");
  plot.dataset.ready = "false";
  const request = ++detailRequest;
  const chart = chartName({ head: true });
  exportMenu.point(panel.querySelector(".export-menu"), id, { head: { layer, head, iteration }, name: fileName(chart) });
  const long = longMap.isLong(current.result.tokens ?? []);
  plot.hidden = long;
  $("long-map-view").hidden = !long;
  try {
    if (long) return await showLongMap(chart, request);
    const rows = await api.getPattern(id, { layer, head, iteration });
    if (request !== detailRequest) return;
    performance.mark("loupe:pattern-decoded"); // read by bench/paint.py: where a slow paint goes
    showTokenView(rows).catch(showError); // needs no Plotly: the text view comes first
    await patternHeatmap(plot, current.result.tokens, rows, { chart });
    performance.mark("loupe:pattern-drawn");
    Object.assign(plot.dataset, { analysis: id, layer, head, iteration, ready: "true" });
    $("compare").hidden = state.compare === null;
    if (state.compare !== null) {
      const b = state.compare;
      const rowsB = await api.getPattern(id, { layer, head, iteration: b });
      if (request !== detailRequest) return;
      await compare.render($("compare"), current.result.tokens, { a: iteration, b, rowsA: rows, rowsB, chart });
      Object.assign($("compare").dataset, { a: iteration, b, ready: "true" });
    }
    if (other?.analysis && !$("pair").hidden && $("pair").dataset.ready !== "refused") await pair.renderMaps($("pair"), current, other.analysis, { layer, head, iteration, chart });
  } catch (err) {
    if (request === detailRequest) showError(err);
  }
}

/** A long prompt's head, drawn from tiles (longmap.js); then, up to longMap.WHOLE_HEAD_TOKENS,
 * its whole pattern for the token view. No iteration comparison or second prompt's map: they draw
 * whole heads with Plotly. */
async function showLongMap(chart, request) {
  clearPattern($("pattern-plot"));
  const { layer, head, iteration, zoom, color } = state;
  const { id, result } = current;
  const whole = result.tokens.length <= longMap.WHOLE_HEAD_TOKENS;
  for (const el of ["compare", "compare-control", ...(whole ? [] : ["token-view"])]) $(el).hidden = true;
  await longMap.show($("long-map-view"), { id, layer, head, iteration, tokens: result.tokens, zoom, color, name: fileName(chart) });
  if (!whole) return;
  const rows = await api.getPattern(id, { layer, head, iteration }); // after the map: a shared link paints first
  if (request === detailRequest) await showTokenView(rows);
}

let tokenRequest = 0;

/** The open head's token view: its pattern `rows` and the pinned heads' (fetched once each, cached by api.js). */
async function showTokenView(rows) {
  const { layer, head, iteration, pins } = state;
  const tokens = current.result.tokens;
  const el = $("token-view");
  el.hidden = !tokens || tokens.length !== rows.length;
  if (el.hidden) return;
  const request = ++tokenRequest;
  const id = current.id;
  const pinned = pins.filter((p) => p.layer !== layer || p.head !== head);
  const heads = [{ layer, head, rows }, ...(await Promise.all(
    pinned.map(async (p) => ({ ...p, rows: await api.getPattern(id, { ...p, iteration }) })),
  ))];
  if (request !== tokenRequest || current?.id !== id) return;
  tokenView.render(el, tokens, { heads, pins, token: state.token, direction: state.direction });
  el.dataset.ready = `${id}/${layer}/${head}/${iteration}/${pins.length}`;
}

/** A change made in the token view (token, direction, pins): into the URL; only new pins redraw it. */
async function changeTokenView(changes, { push = false } = {}) {
  Object.assign(state, changes);
  writeUrl(state, { push });
  if ("pins" in changes) showTokenView(await api.getPattern(current.id, state)).catch(showError);
}

/** A view chosen on the long map (its zoom region, its colour scale): into the URL; the map draws itself. */
function changeLongMap(changes) {
  Object.assign(state, changes);
  writeUrl(state);
}

/** The second prompt's panel: its grids beside the current ones, or why there are none; and the
 * control that starts a comparison wherever the current analysis has one. */
function renderPair() {
  const panel = $("pair");
  const comparable = Boolean(current) && pair.pairs(types?.get(current.analysis));
  $("pair-control").hidden = !comparable || state.other !== null;
  if (!$("pair-control").hidden && $("other-pick").dataset.for !== current.id) {
    $("other-pick").dataset.for = current.id;
    pair.offerHistory($("other-pick"), current).catch(showError);
  }
  if (!current || state.other === null) panel.hidden = true;
  else pair.render(panel, current, other, types ?? new Map(), state, { selected: selected(), onSelect: selectHead, chart: chartName() });
}

/** Load the analysis `id` names as the second prompt (state.other), or say why it cannot be shown. */
async function loadOther(id) {
  if (!id) {
    other = null;
    return;
  }
  if (other?.id === id) return;
  try {
    other = { id, analysis: (await load(id)).analysis, error: null };
  } catch (err) {
    other = { id, analysis: null, error: `The second analysis (${id.slice(0, 8)}) cannot be shown: ${err.message}` };
  }
}

/** Run the second prompt with the current analysis' model and params, then show both. */
async function runOther() {
  const text = $("other-prompt").value;
  const body = { analysis: current.analysis, model: current.model, params: current.params ?? {}, text };
  clearError();
  setRunning(true);
  try {
    const done = await api.untilDone(await api.createAnalysis(body), showProgress);
    await loadOther(done.id);
    update({ other: done.id }, { push: true });
  } catch (err) {
    showError(err);
  } finally {
    showProgress(null);
    setRunning(false);
    showHistory();
    $("other-pick").dataset.for = ""; // offer the new entry too
  }
}

function render() {
  const shown = Boolean(current);
  $("empty").hidden = shown;
  $("copy-link").disabled = !shown;
  for (const [name, el] of views) el.hidden = !shown || state.view !== name;
  const iterations = current?.result.n_iterations ?? 1;
  const slider = shown && BY_NAME.get(state.view).usesIteration && iterations > 1;
  $("iteration-control").hidden = !slider;
  $("iteration").max = iterations - 1;
  $("iteration").value = state.iteration;
  $("iteration-value").textContent = state.iteration;
  $("compare-control").hidden = !(shown && storesPatterns(state.view) && iterations > 1);
  $("compare-on").checked = state.compare !== null;
  $("compare-iteration").max = iterations - 1;
  // the next iteration, or the previous one from the last: never the open one itself
  $("compare-iteration").value = state.compare ?? (state.iteration + 1 < iterations ? state.iteration + 1 : Math.max(0, state.iteration - 1));
  $("compare-iteration").disabled = state.compare === null;
  $("compare-value").textContent = $("compare-iteration").value;
  if (state.compare === null) $("compare").hidden = true;
  renderPair();
  if (!shown) {
    $("head-detail").hidden = true;
    return;
  }
  exportMenu.point(views.get(state.view).querySelector(".export-menu"), current.id);
  renderOverview(renderDetail()); // renderDetail catches its own errors
}

function update(changes, { push = false } = {}) {
  Object.assign(state, changes);
  writeUrl(state, { push });
  render();
}

function selectHead(layer, head) {
  const attending = current?.result.attention_layers;
  if (attending && !attending.includes(layer)) return; // a hybrid stack's layer without attention: no pattern
  update({ layer, head }, { push: true });
}

// ---- actions -------------------------------------------------------------------------------

/** Show a done analysis as the current one: the view state clamped to it, the URL written. */
function show(analysis, { push }) {
  current = analysis;
  state.analysis = analysis.id;
  state.prompt = takesText(analysis.analysis) ? null : $("prompt").value; // its record keeps no text: the URL does
  state.other = other = null; // a new run is shown on its own; "Compare with another prompt" pairs it
  clampState();
  writeUrl(state, { push });
  render();
}

async function run(plot, form) {
  let body;
  try {
    body = request(plot, form);
  } catch (err) {
    showError(err); // a card that is not ready (say, "uploaded" with no file)
    return;
  }
  clearError();
  showNotice(null);
  setRunning(true);
  showProgress({ stage: "submitting" });
  try {
    if (body.text !== undefined) body.text = await promptCard.textForRun(body.model, body.text);
    show(await api.untilDone(await api.createAnalysis(body), showProgress), { push: true });
  } catch (err) {
    showError(err);
  } finally {
    showProgress(null);
    setRunning(false);
    showHistory(); // a new entry, done or failed
  }
}

/** The history panel; an entry reopens its analysis as a link would. */
function showHistory() {
  refreshHistory($("history"), {
    onOpen: (id) => {
      history.pushState(null, "", `${location.pathname}?analysis=${encodeURIComponent(id)}`);
      applyUrl();
    },
    onError: showError,
  });
}

/** An analysis by id, done: from the cache (GET, never a recomputation), unless its result was
 * evicted, then recomputed from the request its row keeps (the same id). */
async function load(id) {
  const asked = early?.id === id ? early.found : api.getAnalysis(id);
  if (early?.id === id) early = null; // asked for once: a later visit asks again
  const found = await asked;
  if (found.status !== "evicted") return { analysis: await api.untilDone(found, showProgress), recomputed: false };
  showProgress({ stage: "recomputing" });
  const { analysis, model, text, params } = found;
  const body = { analysis, model, params, ...(text === null || text === undefined ? {} : { text }) };
  return { analysis: await api.untilDone(await api.createAnalysis(body), showProgress), recomputed: true };
}

/** Show what the address bar names. */
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
    showNotice(null);
    try {
      const { analysis, recomputed } = await load(next.analysis);
      if (!BY_NAME.has(analysis.analysis)) throw new Error(`This page cannot show "${analysis.analysis}" analyses yet.`);
      current = analysis;
      next.analysis = analysis.id;
      restoreInputs(current);
      if (recomputed) showNotice(EVICTED_NOTE);
    } catch (err) {
      current = null;
      showError(err);
    } finally {
      showProgress(null);
    }
  }
  if (current && takesText(current.analysis)) next.prompt = null; // the analysis' own text is the prompt
  else if (current && next.prompt !== null) {
    $("prompt").value = next.prompt;
    promptCard.scheduleCount(0);
  }
  state = next;
  if (current) await loadOther(state.other);
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

/** A card and a view per plot module; the view's own controls bound by the module. */
function build() {
  const offers = Object.assign(document.createElement("p"), { id: "model-offers", className: "hint", hidden: true });
  offers.dataset.testid = "model-offers";
  $("model-warning").after(offers); // links to the models that hidden cards name (offerModels)
  for (const plot of PLOTS) {
    const form = buildCard(plot, { onRun: run, showError });
    form.card.hidden = true; // until the analysis types say where it applies
    $("analysis-cards").append(form.card);
    forms.set(plot.name, form);
    const id = `view-${plot.name.replace(/_/g, "-")}`;
    const view = Object.assign(document.createElement("section"), { id, className: "view", hidden: true });
    view.dataset.testid = id;
    view.dataset.view = plot.name;
    view.innerHTML = plot.view; // the module's static markup: no data goes in here
    plot.bind?.(view, { update });
    view.prepend(exportMenu.menu(view, `export-${plot.name}`));
    $("head-detail").before(view);
    views.set(plot.name, view);
  }
  tokenView.mount($("token-view"), { onChange: changeTokenView });
  longMap.mount($("long-map-view"), { onChange: changeLongMap, onError: showError });
  $("close-head").before(exportMenu.menu($("head-detail"), "export-head"));
}

function bind() {
  $("prompt").addEventListener("keydown", (event) => {
    if (!(event.key === "Enter" && (event.ctrlKey || event.metaKey))) return;
    const first = PLOTS.find((plot) => !forms.get(plot.name).card.hidden && types?.get(plot.name)?.takes_text);
    if (first) $(runButtonId(first.name)).click();
  });
  $("compare-on").addEventListener("change", (event) =>
    update({ compare: event.target.checked ? Number($("compare-iteration").value) : null }));
  $("compare-iteration").addEventListener("input", (event) => update({ compare: Number(event.target.value) }));
  const changeModel = () => {
    describeModel();
    // another model's results must not stay on screen under this one: back to the empty view
    if (current && current.model !== modelId()) {
      history.pushState(null, "", `${location.pathname}?model=${encodeURIComponent(modelId())}`);
      applyUrl();
    }
  };
  $("model-select").addEventListener("change", () => {
    fillCheckpoints();
    changeModel();
  });
  $("checkpoint-select").addEventListener("change", changeModel);
  $("iteration").addEventListener("input", (event) => update({ iteration: Number(event.target.value) }));
  $("close-head").addEventListener("click", () => update({ layer: null, head: null }, { push: true }));
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (state.layer !== null) update({ layer: null, head: null }, { push: true }); // the open head panel first
    else if (modelCard.isOpen()) modelCard.close();
    else clearError();
  });
  promptCard.bind();
  $("prompt").addEventListener("input", () => {
    if (!current || takesText(current.analysis)) return;
    state.prompt = $("prompt").value; // beside an analysis that takes no text, the URL keeps the prompt
    writeUrl(state);
  });
  modelCard.bind({ selectedId: () => $("model-select").value, showError });
  $("error-close").addEventListener("click", clearError);
  $("notice-close").addEventListener("click", () => showNotice(null));
  $("save-token").addEventListener("click", () => {
    api.setToken($("api-token").value.trim());
    $("api-token").value = "";
    $("token-card").hidden = true;
    clearError();
  });
  $("copy-link").addEventListener("click", copyLink);
  $("run-other").addEventListener("click", runOther);
  $("other-pick").addEventListener("change", async (event) => {
    if (!event.target.value) return;
    await loadOther(event.target.value);
    update({ other: event.target.value }, { push: true });
  });
  $("close-pair").addEventListener("click", () => update({ other: null }, { push: true }));
  window.addEventListener("popstate", applyUrl);
  window.addEventListener("unhandledrejection", (event) => showError(event.reason));
}

async function boot() {
  performance.mark("loupe:boot");
  build();
  bind();
  // A shared link: ask for its analysis now, alongside the model list and Plotly, instead of after
  // them (load() takes it from here), and for a short prompt's head its whole pattern as soon as the
  // analysis says it is short (renderDetail then finds it in flight or arrived). Errors surface
  // when the view asks again.
  const linked = readUrl();
  if (linked.analysis) {
    early = { id: linked.analysis, found: api.getAnalysis(linked.analysis) };
    early.found
      .then((found) => {
        const short = found.status === "done" && !longMap.isLong(found.result?.tokens ?? []);
        if (short && linked.layer !== null) return api.getPattern(linked.analysis, linked);
      })
      .catch(() => {});
  }
  const [models, analysisTypes] = await Promise.allSettled([api.listModels(), api.listAnalysisTypes()]);
  if (analysisTypes.status === "fulfilled") types = new Map(analysisTypes.value.map((type) => [type.name, type]));
  else showError(analysisTypes.reason);
  if (models.status === "fulfilled") fillModels(models.value);
  else showError(models.reason);
  const listed = ($("model-select").models || []).map((m) => m.id);
  if (linked.model && (listed.includes(linked.model) || listed.includes(linked.model.slice(0, linked.model.lastIndexOf("@"))))) {
    selectModel(linked.model); // ?model=… (`<id>@<step>`: at that checkpoint) preselects it (a linked analysis' own model wins)
    describeModel();
  }
  showCards();
  showHistory();
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
