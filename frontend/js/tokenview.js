// The token view of an open head: the prompt as text, each token shaded by the attention it gets
// from the selected token (its pattern row: "attends to") or gives to it (its column: "attended
// by"), for the open head and the heads pinned beside it, each in its own hue. Tokens are built once
// per prompt; hovering, clicking or the arrow keys only change styles, so 1,000+ tokens stay fast.

import { MAX_PINS } from "./state.js";

// The open head's hue, then one per pin (at most MAX_PINS).
export const HUES = [[37, 99, 235], [234, 88, 12], [22, 163, 74], [147, 51, 234], [219, 39, 119], [8, 145, 178]];
const SHADE = 0.8; // the alpha a weight of 1 gets: text stays legible on the darkest token

/** The weight each position gets from (or gives to) `pos` in one head's pattern: row `pos` for
 * "to" (query -> keys), column `pos` for "from" (keys <- queries). rows: [query_pos][key_pos]. */
export function weights(rows, pos, direction) {
  if (direction === "to") return rows[pos];
  return Float32Array.from(rows, (row) => row[pos]); // [query_pos]
}

const rgba = ([r, g, b], alpha) => `rgba(${r}, ${g}, ${b}, ${alpha.toFixed(4)})`;
const label = ({ layer, head }) => `L${layer}H${head}`;

/** Build the view's controls in `el` once; onChange(changes, {push}) changes the page state
 * (token, direction, pins) without redrawing anything else. */
export function mount(el, { onChange }) {
  el.innerHTML = `
    <div class="card-head">
      <h3>Tokens</h3>
      <fieldset class="token-direction" data-testid="token-direction">
        <legend class="visually-hidden">Shade by</legend>
        <label><input type="radio" name="token-direction" value="to" data-testid="direction-to" checked> attends to (query → keys)</label>
        <label><input type="radio" name="token-direction" value="from" data-testid="direction-from"> attended by (keys ← queries)</label>
      </fieldset>
    </div>
    <p class="hint">Hover or click a token, or focus one and use the arrow keys: every token is shaded by its weight in the
      selected token's row (attends to) or column (attended by). Pinned heads shade in their own hue; a token's background takes
      the strongest head, and with pins each head also draws its own underline.</p>
    <div class="token-heads" data-role="heads">
      <span data-role="legend" data-testid="token-legend"></span>
      <button type="button" class="secondary" data-role="pin" data-testid="pin-head">Pin this head</button>
    </div>
    <div class="token-text" data-role="text" data-testid="token-text" role="listbox" aria-label="Prompt tokens"></div>
    <p class="visually-hidden" data-role="announce" aria-live="polite"></p>`;
  const view = { el, onChange, tokens: null, nodes: [], heads: [], pins: [], open: null, token: null, direction: "to", hovered: null, frame: 0 };
  el._tokenView = view;
  const text = el.querySelector("[data-role=text]");
  for (const radio of el.querySelectorAll("input[name=token-direction]")) {
    radio.addEventListener("change", () => {
      view.direction = radio.value;
      shade(view);
      announce(view);
      onChange({ direction: radio.value });
    });
  }
  el.querySelector("[data-role=pin]").addEventListener("click", () => {
    const pins = [...view.pins, { layer: view.open.layer, head: view.open.head }];
    onChange({ pins }, { push: true });
  });
  const position = (target) => (target?.dataset?.pos === undefined ? null : Number(target.dataset.pos));
  text.addEventListener("mouseover", (event) => {
    const pos = position(event.target);
    if (pos === null || pos === view.hovered) return;
    view.hovered = pos;
    schedule(view);
  });
  text.addEventListener("mouseleave", () => {
    view.hovered = null;
    schedule(view);
  });
  text.addEventListener("click", (event) => {
    const pos = position(event.target);
    if (pos !== null) select(view, pos, { focus: false });
  });
  text.addEventListener("keydown", (event) => {
    const pos = position(event.target);
    if (pos === null) return;
    const last = view.nodes.length - 1;
    const moves = { ArrowRight: pos + 1, ArrowDown: pos + 1, ArrowLeft: pos - 1, ArrowUp: pos - 1, Home: 0, End: last };
    if (event.key in moves) select(view, Math.max(0, Math.min(last, moves[event.key])), { focus: true });
    else if (event.key === "Enter" || event.key === " ") select(view, pos, { focus: true });
    else return;
    event.preventDefault();
  });
  return view;
}

/** Show `tokens` shaded for `heads` ([{layer, head, rows}], the open head first) from the selected
 * `token` in `direction`; `pins` are the pinned heads (the page state's). Rebuilds the token nodes
 * only when the prompt changes. */
export function render(el, tokens, { heads, pins, token, direction }) {
  const view = el._tokenView;
  if (view.tokens !== tokens) {
    view.tokens = tokens;
    view.hovered = null;
    view.nodes = tokens.map((text, pos) => {
      const node = document.createElement("span");
      node.className = "tt";
      node.textContent = text; // user data: text, never HTML
      node.dataset.pos = pos;
      node.title = `position ${pos}`;
      node.tabIndex = -1;
      node.setAttribute("role", "option");
      node.setAttribute("aria-selected", "false");
      return node;
    });
    el.querySelector("[data-role=text]").replaceChildren(...view.nodes);
  }
  view.heads = heads;
  view.open = heads[0];
  view.pins = pins;
  view.direction = direction;
  for (const radio of el.querySelectorAll("input[name=token-direction]")) radio.checked = radio.value === direction;
  const openPinned = pins.some((p) => p.layer === view.open.layer && p.head === view.open.head);
  const pin = el.querySelector("[data-role=pin]");
  pin.disabled = openPinned || pins.length >= MAX_PINS;
  pin.textContent = openPinned ? "Pinned" : "Pin this head";
  legend(view);
  mark(view, token === null || token >= tokens.length ? null : token);
  shade(view);
}

/** The heads shown, each a swatch in its hue; a pinned one has an unpin button. */
function legend(view) {
  const items = view.heads.map((head, i) => {
    const item = document.createElement("span");
    item.className = "token-head";
    item.style.setProperty("--hue", rgba(HUES[i], 1));
    item.dataset.testid = `token-head-${label(head)}`;
    item.textContent = i === 0 ? `${label(head)} (open)` : label(head);
    const pinned = view.pins.findIndex((p) => p.layer === head.layer && p.head === head.head);
    if (pinned >= 0) {
      const unpin = Object.assign(document.createElement("button"), { type: "button", className: "icon", textContent: "×" });
      unpin.setAttribute("aria-label", `Unpin ${label(head)}`);
      unpin.dataset.testid = `unpin-${label(head)}`;
      unpin.addEventListener("click", () => view.onChange({ pins: view.pins.filter((_, j) => j !== pinned) }, { push: true }));
      item.append(unpin);
    }
    return item;
  });
  view.el.querySelector("[data-role=legend]").replaceChildren(...items);
}

/** Mark `pos` as the selected token: the one tab stop among the tokens (a roving tabindex). */
function mark(view, pos) {
  const before = view.nodes[view.token ?? 0];
  if (before) {
    before.tabIndex = -1;
    before.classList.remove("selected");
    before.setAttribute("aria-selected", "false");
  }
  view.token = pos;
  const node = view.nodes[pos ?? 0];
  if (!node) return;
  node.tabIndex = 0; // with nothing selected, the first token is where Tab lands
  if (pos === null) return;
  node.classList.add("selected");
  node.setAttribute("aria-selected", "true");
}

function select(view, pos, { focus }) {
  mark(view, pos);
  if (focus) view.nodes[pos].focus();
  view.hovered = null;
  shade(view);
  announce(view);
  view.onChange({ token: pos });
}

/** Shade on the next frame: a fast mouse over many tokens restyles once per frame. */
function schedule(view) {
  if (view.frame) return;
  view.frame = requestAnimationFrame(() => {
    view.frame = 0;
    shade(view);
  });
}

/** Style every token by the weights from the hovered token, else the selected one; blank with neither. */
function shade(view) {
  const from = view.hovered ?? view.token;
  const text = view.el.querySelector("[data-role=text]");
  text.dataset.from = from ?? "";
  text.dataset.direction = view.direction;
  const columns = from === null ? [] : view.heads.map((head) => weights(head.rows, from, view.direction));
  const many = columns.length > 1;
  view.nodes.forEach((node, pos) => {
    let best = -1;
    let top = 0;
    const lines = [];
    columns.forEach((column, i) => {
      const w = column[pos] ?? 0;
      if (w > top) [best, top] = [i, w];
      if (many) lines.push(`inset 0 -${3 * (i + 1)}px 0 0 ${rgba(HUES[i], w)}`);
    });
    node.style.backgroundColor = best < 0 ? "" : rgba(HUES[best], SHADE * top);
    node.style.color = top > 0.6 ? "#fff" : "";
    node.style.boxShadow = lines.length ? lines.reverse().join(", ") : "";
    node.dataset.w = columns.length ? top.toFixed(4) : "";
  });
}

/** Say what the selected token shows, for screen readers: its strongest partner in the open head. */
function announce(view) {
  const line = view.el.querySelector("[data-role=announce]");
  if (view.token === null) return;
  const column = weights(view.open.rows, view.token, view.direction);
  let best = 0;
  for (let pos = 1; pos < column.length; pos++) if (column[pos] > column[best]) best = pos;
  const verb = view.direction === "to" ? "attends most to" : "is attended most by";
  line.textContent = `Token ${view.token} “${view.tokens[view.token]}” ${verb} token ${best} “${view.tokens[best]}” ` +
    `(${column[best].toFixed(3)}) in ${label(view.open)}.`;
}
