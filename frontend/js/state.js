// The view state and its URL: the one place that reads and writes the query string. Common keys
// are this module's; each view adds the keys its plot module declares (`keys`).

import { SCALES } from "./colormap.js";
import { BY_NAME, PLOTS } from "./plots/index.js";

export const VIEWS = PLOTS.map((plot) => plot.name);

// Key order in the URL; values are strings in the URL and typed in the state.
// compare: a second iteration of the open head, shown beside `iteration`.
// model: the model to preselect (`?model=looped-add`); an analysis' own model wins over it.
// token, direction, pins: the open head's token view (tokenview.js): the selected position, whether
// it shades what that token attends to ("to") or what attends to it ("from"), and the heads pinned
// beside the open one (`pins=1.2,0.3`: layer.head).
// zoom, color: the open head's long map (longmap.js): the region shown (`zoom=q0,q1,k0,k1`, query
// then key positions, ends excluded; absent: the whole head) and its colour scale (linear, log, row).
// other: a second analysis (another prompt on the same model) shown beside `analysis` (pair.js).
// prompt: the prompt box beside an analysis that takes no text (head_scores): its own record holds
// none, so without this a reload would lose what was typed.
const COMMON = ["analysis", "other", "view", "layer", "head", "iteration", "compare", "token", "direction", "pins", "zoom", "color", "model", "prompt"];
const COMMON_INTS = new Set(["layer", "head", "iteration", "compare", "token"]);
export const DIRECTIONS = ["to", "from"];
export const MAX_PINS = 5;

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
  const state = {
    analysis: null, other: null, view: null, layer: null, head: null, iteration: 0, compare: null,
    token: null, direction: "to", pins: [], zoom: null, color: "linear", model: null, prompt: null,
  };
  for (const [key, spec] of Object.entries(VIEW_KEYS)) state[key] = spec.default;
  return state;
}

function nonNegativeInt(value) {
  return /^\d+$/.test(value) ? Number(value) : null;
}

/** "1.2,0.3" -> [{layer: 1, head: 2}, {layer: 0, head: 3}]: malformed and repeated entries dropped. */
function parsePins(raw) {
  const pins = [];
  for (const part of raw.split(",")) {
    const match = /^(\d+)\.(\d+)$/.exec(part);
    if (!match || pins.length >= MAX_PINS) continue;
    const pin = { layer: Number(match[1]), head: Number(match[2]) };
    if (!pins.some((p) => p.layer === pin.layer && p.head === pin.head)) pins.push(pin);
  }
  return pins;
}

/** "0,64,10,40" -> [0, 64, 10, 40]: four positions, each range non-empty; else null. */
function parseZoom(raw) {
  const match = /^(\d+),(\d+),(\d+),(\d+)$/.exec(raw);
  const zoom = match?.slice(1).map(Number);
  return zoom && zoom[0] < zoom[1] && zoom[2] < zoom[3] ? zoom : null;
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
    if (key === "pins") state.pins = parsePins(raw);
    else if (key === "direction") state.direction = DIRECTIONS.includes(raw) ? raw : "to";
    else if (key === "zoom") state.zoom = parseZoom(raw);
    else if (key === "color") state.color = SCALES.includes(raw) ? raw : "linear";
    else state[key] = COMMON_INTS.has(key) ? nonNegativeInt(raw) : raw;
  }
  for (const [key, spec] of Object.entries(VIEW_KEYS)) {
    const raw = params.get(key);
    if (raw !== null && raw !== "") state[key] = parseKey(spec, raw);
  }
  if (state.iteration === null) state.iteration = 0;
  if (!VIEWS.includes(state.view)) state.view = null;
  if (state.layer === null || state.head === null) state.layer = state.head = null;
  if (state.layer === null) {
    state.compare = state.token = state.zoom = null; // a comparison, a token, a zoom belong to an open head
    state.direction = "to";
    state.color = "linear";
    state.pins = [];
  }
  if (state.other === state.analysis) state.other = null;
  return state;
}

/** The query string for a state ("" when nothing is analysed); only the keys that matter for its view. */
export function toQuery(state) {
  if (!state.analysis) return "";
  const params = new URLSearchParams();
  params.set("analysis", state.analysis);
  if (state.other) params.set("other", state.other);
  if (state.view) params.set("view", state.view);
  if (state.layer !== null && state.head !== null) {
    params.set("layer", state.layer);
    params.set("head", state.head);
  }
  params.set("iteration", state.iteration);
  const open = state.layer !== null && state.head !== null;
  if (state.compare !== null && open) params.set("compare", state.compare);
  if (state.token !== null && open) params.set("token", state.token);
  if (state.direction !== "to" && open) params.set("direction", state.direction);
  if (state.pins.length && open) params.set("pins", state.pins.map((p) => `${p.layer}.${p.head}`).join(","));
  if (state.zoom && open) params.set("zoom", state.zoom.join(","));
  if (state.color !== "linear" && open) params.set("color", state.color);
  for (const key of Object.keys(BY_NAME.get(state.view)?.keys ?? {})) {
    if (state[key] !== null && state[key] !== undefined) params.set(key, state[key]);
  }
  if (state.prompt) params.set("prompt", state.prompt);
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
