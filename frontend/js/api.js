// Fetch wrappers for the Loupe API. Every failure becomes an ApiError carrying the server's
// {"error", "code", "status"} body, so the page has one thing to show.

export class ApiError extends Error {
  constructor(message, code = "network_error", status = 0, retryAfter = null) {
    super(message);
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter; // seconds, from Retry-After (429 too_many_jobs): when to ask again
  }
}

async function send(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    if (err.name === "AbortError") throw err; // the caller gave up on it: not a failure to show
    throw new ApiError(`Cannot reach the Loupe server (${err.message}).`);
  }
  if (response.ok) return response;
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not our JSON error shape (a proxy page, say): fall through to the generic message
  }
  const retry = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
  const retryAfter = Number.isFinite(retry) && retry >= 0 ? retry : null;
  if (body && typeof body.error === "string") throw new ApiError(body.error, body.code, body.status ?? response.status, retryAfter);
  throw new ApiError(`${response.status} ${response.statusText || "error"} from ${path}`, "http_error", response.status, retryAfter);
}

async function getJson(path) {
  return (await send(path)).json();
}

// With LOUPE_API_TOKEN set, computing needs a bearer token; reading (permalinks) stays open.
const TOKEN_KEY = "loupe-api-token";

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

export const listModels = () => getJson("/api/models");

const modelPath = (model) => `/api/models/${model.split("/").map(encodeURIComponent).join("/")}`;

/** A model's card: its README.md as markdown text (ApiError `no_card` where it has none). */
export const getModelCard = async (model) => (await send(`${modelPath(model)}/card`)).text();

/** A text's token count on a model and its limit: {n_tokens, limit, truncated}; with `truncate`,
 * `truncated` holds the text cut to its first `limit` tokens (null when it fits). */
export async function tokenize(model, text, { truncate = false } = {}) {
  const response = await send(`${modelPath(model)}/tokenize`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify({ text, truncate }),
  });
  return response.json();
}

/** Every analysis the server runs: {name, needs, takes_text, takes_loop, stores_patterns, params, ...}. */
export const listAnalysisTypes = () => getJson("/api/analysis_types");

export const getAnalysis = (id) => getJson(`/api/analyses/${encodeURIComponent(id)}`);

/** The history: {items, total, next_offset}, newest first; `filters`: model, analysis, status, limit, offset. */
export const listAnalyses = (filters = {}) => getJson(`/api/analyses?${query(filters)}`);

/** Delete a stored analysis (needs the API token where the server has one). */
export async function deleteAnalysis(id) {
  await send(`/api/analyses/${encodeURIComponent(id)}`, { method: "DELETE", headers: authHeaders() });
}

/** POST an analysis; the server answers at once from its cache, or with `queued`/`running` after wait_s. */
export async function createAnalysis(body) {
  const response = await send("/api/analyses", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify({ wait_s: 1.5, ...body }),
  });
  return response.json();
}

/** Parse an uploaded JSONL/CSV of text,label into checked rows for `probes` (nothing is stored). */
export async function parseDataset(format, content) {
  const response = await send("/api/datasets/parse", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ format, content }),
  });
  return response.json();
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll until the analysis is done; calls onProgress(progress) meanwhile. Throws its error if it failed. */
export async function untilDone(analysis, onProgress = () => {}) {
  let delay = 250;
  while (analysis.status === "queued" || analysis.status === "running") {
    onProgress(analysis.progress || { stage: analysis.status, percent: 0 });
    await sleep(delay);
    delay = Math.min(delay * 1.5, 2000);
    analysis = await getAnalysis(analysis.id);
  }
  if (analysis.status === "error") {
    const err = analysis.error || {};
    throw new ApiError(err.error || "The analysis failed.", err.code || "analysis_failed", err.status || 500);
  }
  return analysis;
}

function query(params) {
  return new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();
}

const CODECS = { "tri-u16-zlib": "triangle", "full-u16-zlib": "full" };
const patterns = new Map(); // path -> Promise of rows: a pattern asked for early (prefetch) is fetched once

/**
 * One head's pattern as T rows of Float32Array (query positions), from its stored bytes
 * (format=stored, 0.54 MB at T = 1024 against 2.1 MB of uint16): a zlib stream that the browser
 * inflates itself, holding n uint16 as n low bytes then n high bytes, n = T(T+1)/2 for the causal
 * lower triangle (row q holds keys 0..q) or T*T.
 */
export function getPattern(id, { layer, head, iteration }) {
  const path = `/api/analyses/${encodeURIComponent(id)}/attention?${query({ layer, head, iteration, format: "stored" })}`;
  if (!patterns.has(path)) {
    const loading = fetchPattern(path);
    loading.catch(() => patterns.delete(path)); // a failure is not cached: asking again retries
    patterns.set(path, loading);
    if (patterns.size > 16) patterns.delete(patterns.keys().next().value);
  }
  return patterns.get(path);
}

async function fetchPattern(path) {
  const response = await send(path);
  const [nQuery, nKey] = (response.headers.get("X-Shape") || "").split(",").map(Number);
  const layout = CODECS[response.headers.get("X-Codec")];
  const bytes = new Uint8Array(
    await new Response(response.body.pipeThrough(new DecompressionStream("deflate"))).arrayBuffer(),
  );
  performance.mark("loupe:pattern-inflated");
  const n = layout === "triangle" ? (nQuery * (nQuery + 1)) / 2 : nQuery * nKey;
  if (!layout || !(bytes.length === 2 * n) || (layout === "triangle" && nQuery !== nKey)) {
    throw new ApiError(`Malformed pattern from ${path}.`, "bad_response", 500);
  }
  const rows = [];
  let i = 0;
  for (let q = 0; q < nQuery; q++) {
    const row = new Float32Array(nKey); // keys past the triangle stay 0
    const stored = layout === "triangle" ? q + 1 : nKey;
    for (let k = 0; k < stored; k++, i++) row[k] = (bytes[i] | (bytes[n + i] << 8)) / 65535;
    rows.push(row);
  }
  return rows; // [query_pos][key_pos]
}

/** Max-pooled previews of every head: [layer][head][row][col] of 0..255. */
export async function getThumbnails(id, iteration) {
  return (await getJson(`/api/analyses/${encodeURIComponent(id)}/thumbnails?${query({ iteration })}`)).thumbnails;
}

const tiles = new Map(); // path -> a fetched tile: the overview again after a reset, a colour scale again
const MAX_TILES = 8;

/**
 * A region of one head's pattern, max-pooled by the server to at most `size` x `size` cells:
 * {values: Uint16Array [rows * cols] of weight * 65535 (row-major), rows, cols, region: [q0, q1, k0, k1]}.
 * `norm` "row" divides each query row by its own maximum first. Row r covers query positions
 * [q0 + floor(r n / rows), q0 + ceil((r + 1) n / rows)), n = q1 - q0 (likewise columns); when rows
 * and cols equal the region's sides the cells are the exact weights. `signal` aborts the request;
 * `keep` false leaves it out of the few tiles kept (a hovered block must not push out the overview).
 */
export async function getTile(id, { layer, head, iteration, region, size, norm = "none" }, { signal, keep = true } = {}) {
  const [q0, q1, k0, k1] = region;
  const path = `/api/analyses/${encodeURIComponent(id)}/attention/tile?${query({ layer, head, iteration, q0, q1, k0, k1, size, norm })}`;
  if (tiles.has(path)) return tiles.get(path);
  const response = await send(path, { signal });
  const [rows, cols] = (response.headers.get("X-Shape") || "").split(",").map(Number);
  const served = (response.headers.get("X-Region") || "").split(",").map(Number);
  const values = new Uint16Array(await response.arrayBuffer()); // little-endian, as every browser platform is
  if (!(rows > 0 && cols > 0 && values.length === rows * cols) || served.join() !== region.join()) {
    throw new ApiError(`Malformed tile from ${path}.`, "bad_response", 500);
  }
  const tile = { values, rows, cols, region: served };
  if (!keep) return tile;
  tiles.set(path, tile);
  if (tiles.size > MAX_TILES) tiles.delete(tiles.keys().next().value);
  return tile;
}
