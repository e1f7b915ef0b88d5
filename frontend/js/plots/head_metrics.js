// The `head_metrics` analysis: its card (the built-in English corpus or an uploaded JSONL of texts,
// how many, how long, top k) and its view: a scatter of every head (and iteration) by two chosen
// metrics; clicking a head lists the examples where its metric is strongest, and clicking an example
// runs `attention` on that text (same model and loop) and opens that head's map there.

import * as api from "../api.js";
import { setRunning, showError, showProgress } from "../feedback.js";
import { fileChooser } from "../forms.js";
import { COLORS, draw, onClick, plotlyText, renderTokens } from "../plotting.js";

export const name = "head_metrics";

const METRICS = ["previous_token", "bos", "self", "entropy", "induction"];
let uploadedTexts = null; // texts of the last read upload, for corpus `texts`

export const card = {
  title: "Head metrics over a corpus",
  button: "Measure heads",
  hint: "Every head's attention stats averaged over many texts, with the examples where each is strongest. Runs in the background.",
  fields: [
    { name: "corpus", id: "hm-corpus", label: "Corpus", type: "select", default: "english", options: [["english", "English (built in)"], ["texts", "uploaded"]] },
    { name: "n_texts", id: "hm-n-texts", label: "Texts", type: "number", min: 1, max: 500, default: 100 },
    { name: "max_tokens", id: "hm-max-tokens", label: "Tokens each", type: "number", min: 4, max: 4096, default: 64 },
    { name: "top_k", id: "hm-top-k", label: "Top k", type: "number", min: 1, max: 20, default: 5 },
  ],
  /** The upload: a JSONL of {"text": …} rows, read here; the server bounds and checks the texts. */
  build(form) {
    const { file, info } = fileChooser(form, { prefix: "hm", accept: ".jsonl,.json,.txt", label: "Upload JSONL of {\"text\": …}…" });
    file.addEventListener("change", async () => {
      if (!file.files[0]) return;
      try {
        uploadedTexts = textsOf(await file.files[0].text());
        info.textContent = `${uploadedTexts.length} texts from ${file.files[0].name}`;
        form.set("corpus", "texts");
      } catch (err) {
        form.showError(err);
      }
    });
    form.field("corpus").addEventListener("change", (event) => {
      if (event.target.value === "texts" && !uploadedTexts) file.click();
    });
  },
};

/** The texts of a JSONL upload: one {"text": "…"} object per non-blank line; throws naming the first bad line. */
export function textsOf(content) {
  const texts = [];
  content.split(/\r?\n/).forEach((line, index) => {
    if (!line.trim()) return;
    let row;
    try {
      row = JSON.parse(line);
    } catch {
      throw new Error(`Line ${index + 1} is not JSON.`);
    }
    if (typeof row?.text !== "string") throw new Error(`Line ${index + 1} is not an object with a string "text".`);
    texts.push(row.text);
  });
  if (!texts.length) throw new Error("The file holds no texts.");
  return texts;
}

/** The request params from the card; throws when `uploaded` is chosen with no file. */
export function params(form) {
  const params = form.values();
  if (params.corpus === "texts") {
    if (!uploadedTexts) throw new Error("Choose a JSONL file of {\"text\": …} rows first.");
    params.texts = uploadedTexts;
  }
  return params;
}

/** Fill the card back from a loaded analysis, its uploaded texts included. */
export function restore(form, analysis) {
  form.fill(analysis.params);
  if (analysis.params?.texts) uploadedTexts = analysis.params.texts;
}

/** View state kept in the URL: the two axes, whose examples are listed, and the head picked. */
export const keys = {
  metric_x: { values: METRICS, default: "previous_token" },
  metric_y: { values: METRICS, default: "induction" },
  examples_of: { values: METRICS, default: "induction" },
  metric_layer: { type: "int", default: null, below: (result) => result.n_layers },
  metric_head: { type: "int", default: null, below: (result) => result.n_heads },
  metric_iteration: { type: "int", default: null, below: (result) => result.n_iterations },
};
/** Every iteration is on the scatter: no iteration slider. */
export const usesIteration = false;

const options = (id, label) =>
  `<label>${label} <select id="${id}" data-testid="${id}">${METRICS.map((m) => `<option value="${m}"></option>`).join("")}</select></label>`;

export const view = `
  <div class="card">
    <div class="card-head"><h2>Heads by two metrics</h2><span>${options("hm-x", "x")} ${options("hm-y", "y")}</span></div>
    <p class="hint" data-role="hm-summary" data-testid="hm-summary"></p>
    <div id="hm-scatter" data-testid="hm-scatter" class="plot"></div>
    <p class="formula"><span class="field-label">x</span> <span data-role="hm-formula-x"></span></p>
    <p class="formula"><span class="field-label">y</span> <span data-role="hm-formula-y"></span></p>
  </div>
  <div class="card" data-role="hm-examples-card" hidden>
    <div class="card-head"><h2 data-role="hm-examples-title"></h2>${options("hm-examples-of", "Examples of")}</div>
    <p class="hint">Strongest first; the query position is marked. Click one to open this head's map on that text.</p>
    <ol class="hm-examples" data-role="hm-examples" data-testid="hm-examples"></ol>
  </div>`;

/** Wire the view's own controls once; update(changes) changes the view state. */
export function bind(el, { update }) {
  for (const [id, key] of [["hm-x", "metric_x"], ["hm-y", "metric_y"], ["hm-examples-of", "examples_of"]]) {
    el.querySelector(`#${id}`).addEventListener("change", (event) => update({ [key]: event.target.value }));
  }
}

/** Every head's point: [{layer, head, iteration, x, y, label}] (heads with both metrics defined). */
export function points(result, x, y) {
  const looped = result.n_iterations > 1;
  const out = [];
  for (let iteration = 0; iteration < result.n_iterations; iteration++) {
    for (let layer = 0; layer < result.n_layers; layer++) {
      for (let head = 0; head < result.n_heads; head++) {
        const px = result.metrics[x][iteration][layer][head];
        const py = result.metrics[y][iteration][layer][head];
        if (px === null || py === null) continue;
        out.push({ layer, head, iteration, x: px, y: py, label: `L${layer}H${head}` + (looped ? ` it${iteration}` : "") });
      }
    }
  }
  return out;
}

/** Fill the view: the scatter, and the picked head's examples. */
export function render(el, result, state) {
  const { metric_x: x, metric_y: y, examples_of: of, metric_layer: layer, metric_head: head, update, chart } = state;
  const iteration = state.metric_iteration ?? 0;
  for (const [id, value] of [["hm-x", x], ["hm-y", y], ["hm-examples-of", of]]) {
    const select = el.querySelector(`#${id}`);
    for (const option of select.options) option.textContent = result.metric_labels[option.value];
    select.value = value;
  }
  el.querySelector("[data-role=hm-formula-x]").textContent = result.metric_descriptions[x];
  el.querySelector("[data-role=hm-formula-y]").textContent = result.metric_descriptions[y];
  const corpus = result.corpus === "english" ? "of the built-in English corpus" : "uploaded";
  el.querySelector("[data-role=hm-summary]").textContent =
    `${result.texts.length} texts ${corpus}, ${result.n_tokens} tokens; induction over the ${result.n_induction_texts} texts ` +
    "with a repeated token. Click a head to list its examples.";
  const shown = points(result, x, y);
  const picked = (p) => p.layer === layer && p.head === head && p.iteration === iteration;
  const plot = el.querySelector("#hm-scatter");
  draw(plot, [{
    type: "scatter",
    mode: "markers+text",
    x: shown.map((p) => p.x),
    y: shown.map((p) => p.y),
    text: shown.map((p) => p.label),
    customdata: shown.map((p) => [p.layer, p.head, p.iteration]),
    textposition: "top center",
    textfont: { size: 10, color: COLORS.muted },
    marker: {
      size: shown.map((p) => (picked(p) ? 14 : 9)),
      color: shown.map((p) => (picked(p) ? COLORS.highlight : COLORS.blue)),
      opacity: 0.85,
    },
    hovertemplate: `%{text}<br>${plotlyText(result.metric_labels[x])}: %{x:.4f}<br>${plotlyText(result.metric_labels[y])}: %{y:.4f}<extra></extra>`,
  }], {
    margin: { t: 16, r: 16, b: 48, l: 56 },
    height: 420,
    xaxis: { title: { text: plotlyText(result.metric_labels[x]) }, zeroline: false },
    yaxis: { title: { text: plotlyText(result.metric_labels[y]) }, zeroline: false },
    showlegend: false,
  }, { ...chart, part: `${x}-${y}` });
  onClick(plot, (point) => {
    const [l, h, i] = point.customdata;
    update({ metric_layer: l, metric_head: h, metric_iteration: i }, { push: true });
  });
  renderExamples(el, result, { layer, head, iteration, of, analysis: state.analysis });
}

function renderExamples(el, result, { layer, head, iteration, of, analysis }) {
  const box = el.querySelector("[data-role=hm-examples-card]");
  box.hidden = layer === null || head === null;
  if (box.hidden) return;
  const looped = result.n_iterations > 1 ? `, iteration ${iteration}` : "";
  el.querySelector("[data-role=hm-examples-title]").textContent =
    `L${layer}H${head}${looped}: ${result.metric_labels[of]} ${result.metrics[of][iteration][layer][head] ?? "–"} on average`;
  const list = el.querySelector("[data-role=hm-examples]");
  list.dataset.head = `${layer}.${head}.${iteration}.${of}`;
  list.replaceChildren(...result.examples[of][iteration][layer][head].map((example, rank) => {
    const item = document.createElement("li");
    const button = Object.assign(document.createElement("button"), { type: "button", className: "link" });
    button.dataset.testid = `hm-example-${rank}`;
    const tokens = Object.assign(document.createElement("span"), { className: "tokens" });
    renderTokens(tokens, example.tokens, { selected: example.position - example.offset });
    const value = Object.assign(document.createElement("span"), { className: "hint" });
    value.textContent = `${example.value.toFixed(4)} · text ${example.text + 1}, position ${example.position}`;
    button.append(tokens, value);
    button.addEventListener("click", () => openExample(analysis, result, example, { layer, head, iteration }).catch(showError));
    item.append(button);
    return item;
  }));
}

/** Run `attention` on the example's text with this analysis' model and loop, then show that head there. */
async function openExample(id, result, example, { layer, head, iteration }) {
  const own = await api.getAnalysis(id);
  const loop = own.params?.loop;
  setRunning(true);
  showProgress({ stage: "attention on the example" });
  try {
    const body = { analysis: "attention", model: own.model, text: result.texts[example.text], params: loop ? { loop } : {} };
    const done = await api.untilDone(await api.createAnalysis(body), showProgress);
    const query = new URLSearchParams({ analysis: done.id, view: "attention", layer, head, iteration, token: example.position });
    history.pushState(null, "", `${location.pathname}?${query}`);
    window.dispatchEvent(new PopStateEvent("popstate")); // the page shows what the address bar names
  } finally {
    showProgress(null);
    setRunning(false);
  }
}
