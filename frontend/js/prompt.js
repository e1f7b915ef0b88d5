// The prompt card's helpers: the selected model's example input (its loupe.json `prompt_hint`,
// one click to use it), a live token count against the model's limit (tokenized by the server,
// debounced), and Truncate: a run then sends the text cut by the server to its first `limit`
// tokens, so the analysis sees exactly those. Text goes in as text, never HTML.

import * as api from "./api.js";

const DEBOUNCE_MS = 250;
const $ = (id) => document.getElementById(id);

let model = null; // the selected model's listing
let timer = null;
let asked = 0; // only the latest count may show

/** The selected model changed: its hint, and the count on its tokenizer. */
export function setModel(selected) {
  model = selected ?? null;
  const hint = model?.prompt_hint;
  $("prompt-hint").hidden = !hint;
  $("prompt-hint-text").textContent = hint ?? "";
  scheduleCount(0);
}

/** Count again after the typing pauses. */
export function scheduleCount(delay = DEBOUNCE_MS) {
  clearTimeout(timer);
  timer = setTimeout(count, delay);
}

async function count() {
  const el = $("token-count");
  const text = $("prompt").value;
  const request = ++asked;
  if (!model || !model.capabilities?.includes("tokenizer") || !text) {
    showCount(null);
    return;
  }
  try {
    const counted = await api.tokenize(model.id, text);
    if (request === asked) showCount(counted);
  } catch (err) {
    if (request !== asked) return;
    showCount(null);
    el.textContent = `No token count: ${err.message}`;
  }
}

function showCount(counted) {
  const el = $("token-count");
  el.classList.remove("warning");
  delete el.dataset.nTokens;
  delete el.dataset.limit;
  el.dataset.over = "false";
  $("truncate-field").hidden = true;
  if (!counted) {
    el.textContent = "";
    return;
  }
  const { n_tokens: n, limit } = counted;
  const over = n > limit;
  Object.assign(el.dataset, { nTokens: n, limit, over });
  el.classList.toggle("warning", over);
  $("truncate-field").hidden = !over && !$("truncate").checked;
  el.textContent = over
    ? `${n} / ${limit} tokens: past ${model.id}'s limit by ${n - limit}. ` +
      ($("truncate").checked ? `A run uses the first ${limit} tokens only.` : "A run is refused unless you tick Truncate.")
    : `${n} / ${limit} tokens (BOS included)`;
}

/** The text a run sends: the prompt as it is, or with Truncate ticked and the text past the limit,
 * the server's cut to its first `limit` tokens (also put in the box, so it shows what ran). */
export async function textForRun(modelId, text) {
  if (!$("truncate").checked) return text;
  const { truncated } = await api.tokenize(modelId, text, { truncate: true });
  if (!truncated) return text;
  $("prompt").value = truncated.text;
  scheduleCount(0);
  return truncated.text;
}

export function bind() {
  $("prompt").addEventListener("input", () => scheduleCount());
  $("truncate").addEventListener("change", () => scheduleCount(0));
  $("use-hint").addEventListener("click", () => {
    $("prompt").value = model?.prompt_hint ?? $("prompt").value;
    $("prompt").dispatchEvent(new Event("input")); // counted, and kept where the view keeps the prompt
    $("prompt").focus();
  });
}
