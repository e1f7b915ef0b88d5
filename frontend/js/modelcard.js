// The selected model's card (its folder's README.md, GET /api/models/{id}/card): opened from a link
// under the model, shown as preformatted text. The markdown is the model folder's, so user data:
// textContent only, never HTML.

import * as api from "./api.js";

const $ = (id) => document.getElementById(id);
let shownFor = null; // the model whose card is in the panel
let asked = 0;

/** The link shows where the selected model has a card; a card of another model is closed. */
export function setModel(model) {
  $("show-card").hidden = !model?.has_card;
  if (shownFor !== model?.id) close();
}

export function isOpen() {
  return !$("model-card").hidden;
}

export function close() {
  $("model-card").hidden = true;
  shownFor = null;
}

async function open(modelId, showError) {
  const request = ++asked;
  try {
    const text = await api.getModelCard(modelId);
    if (request !== asked) return;
    $("model-card-title").textContent = `Model card: ${modelId}`;
    $("model-card-text").textContent = text; // markdown as text
    $("model-card").hidden = false;
    shownFor = modelId;
  } catch (err) {
    showError(err);
  }
}

export function bind({ selectedId, showError }) {
  $("show-card").addEventListener("click", () => open(selectedId(), showError));
  $("close-card").addEventListener("click", close);
}
