// The view state and its URL: the one place that reads and writes the query string. Common keys
// are this module's; each view adds the keys its plot module declares (`keys`).

import { BY_NAME, PLOTS } from "./plots/index.js";

export const VIEWS = PLOTS.map((plot) => plot.name);

// Key order in the URL; values are strings in the URL and typed in the state.
// compare: a second iteration of the open head, shown beside `iteration`.
// model: the model to preselect (`?model=looped-add`); an analysis' own model wins over it.
const COMMON = ["analysis", "view", "layer", "head", "iteration", "compare", "model"];
const COMMON_INTS = new Set(["layer", "head", "iteration", "compare"]);

/** Every view's declared keys: name -> {values, default} or {type: "int", default}. */
function viewKeys() {
  const keys = {};
  for (const plot of PLOTS) {
    for (const [key, spec] of Object.entries(plot.keys ?? {})) {
      if (COMMON.includes(key) || (key in keys && keys[key] !== spec)) throw new Error(`URL key "${key}" is declared twice`);
      keys[key] = spec;
    }
  }
  return keys;
}
const VIEW_KEYS = viewKeys();

/** The empty state: nothing analysed yet; every view's keys at their defaults. */
export function initialState() {
  const state = { analysis: null, view: null, layer: null, head: null, iteration: 0, compare: null, model: null };
  for (const [key, spec] of Object.entries(VIEW_KEYS)) state[key] = spec.default;
  return state;
}

function nonNegativeInt(value) {
  return /^\d+$/.test(value) ? Number(value) : null;
}

/** A URL value for a declared key, or its default when malformed or not allowed. */
function parseKey(spec, raw) {
  if (spec.type === "int") return nonNegativeInt(raw) ?? spec.default;
  return spec.values.includes(raw) ? raw : spec.default;
}

/** Parse a query string ("?analysis=...&layer=1") into a full state; unknown or malformed values fall back. */
export function parseQuery(search) {
  const params = new URLSearchParams(search);
  const state = initialState();
  for (const key of COMMON) {
    const raw = params.get(key);
    if (raw === null || raw === "") continue;
    state[key] = COMMON_INTS.has(key) ? nonNegativeInt(raw) : raw;
  }
  for (const [key, spec] of Object.entries(VIEW_KEYS)) {
    const raw = params.get(key);
    if (raw !== null && raw !== "") state[key] = parseKey(spec, raw);
  }
  if (state.iteration === null) state.iteration = 0;
  if (!VIEWS.includes(state.view)) state.view = null;
  if (state.layer === null || state.head === null) state.layer = state.head = null;
  if (state.layer === null) state.compare = null; // a comparison belongs to an open head
  return state;
}

/** The query string for a state ("" when nothing is analysed); only the keys that matter for its view. */
export function toQuery(state) {
  if (!state.analysis) return "";
  const params = new URLSearchParams();
  params.set("analysis", state.analysis);
  if (state.view) params.set("view", state.view);
  if (state.layer !== null && state.head !== null) {
    params.set("layer", state.layer);
    params.set("head", state.head);
  }
  params.set("iteration", state.iteration);
  if (state.compare !== null && state.layer !== null && state.head !== null) params.set("compare", state.compare);
  for (const key of Object.keys(BY_NAME.get(state.view)?.keys ?? {})) {
    if (state[key] !== null && state[key] !== undefined) params.set(key, state[key]);
  }
  return "?" + params.toString();
}

/** Keep a view's declared keys inside a loaded result's shape (an int key's `below` bound). */
export function clampKeys(state, result) {
  for (const [key, spec] of Object.entries(BY_NAME.get(state.view)?.keys ?? {})) {
    if (spec.type === "int" && state[key] !== null && spec.below && state[key] >= spec.below(result)) state[key] = spec.default;
  }
}

/** Write the state into the address bar: push for a new view (Back returns to it), replace for a tweak. */
export function writeUrl(state, { push = false } = {}) {
  const url = location.pathname + toQuery(state);
  if (url === location.pathname + location.search) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

/** The state the address bar holds now. */
export function readUrl() {
  return parseQuery(location.search);
}
