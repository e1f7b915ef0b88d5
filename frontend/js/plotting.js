// Plotly defaults for every chart on the page: fonts, colours, the one config (no cloud button, PNG
// and SVG named and titled after the view), token labels, and resizing with the element. Charts draw through draw().
// Every string handed to Plotly goes through plotlyText(): Plotly renders tags such as <b> or <br>
// in labels and hover text, and token strings are user data.

const Plotly = () => window.Plotly;

/** Resolves once Plotly has loaded (index.html loads it after main.js, so requests go first). */
export function plotlyReady() {
  if (window.Plotly) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const script = document.getElementById("plotly-js");
    script.addEventListener("load", () => resolve(), { once: true });
    script.addEventListener("error", () => reject(new Error("Plotly could not be loaded: no chart can be drawn.")), { once: true });
  });
}

export const FONT = { family: "Inter, system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#1f2937" };

// White to dark blue: zero attention (the causal mask's upper triangle) stays blank.
export const BLUES = [
  [0, "#ffffff"], [0.125, "#deebf7"], [0.25, "#c6dbef"], [0.375, "#9ecae1"], [0.5, "#6baed6"],
  [0.625, "#4292c6"], [0.75, "#2171b5"], [0.875, "#08519c"], [1, "#08306b"],
];
// Diverging, white at zero: differences between two patterns.
export const RED_BLUE = [[0, "#b91c1c"], [0.25, "#fca5a5"], [0.5, "#ffffff"], [0.75, "#93c5fd"], [1, "#1d4ed8"]];
// Line and marker colours, one name per role, the same on every chart.
export const COLORS = {
  blue: "#2563eb", red: "#dc2626", green: "#16a34a", purple: "#7c3aed", gray: "#9ca3af", muted: "#6b7280",
  text: "#374151", highlight: "#f43f5e",
};

const BASE_LAYOUT = { font: FONT, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)" };

/**
 * The PNG name of a chart: `loupe-<model>-<analysis>-L<layer>H<head>-it<iteration>-<part>`, only the
 * parts given, each cut to [A-Za-z0-9._-], so a saved image says which view it came from.
 */
export function fileName({ model, analysis, layer, head, iteration, part } = {}) {
  const clean = (value) => String(value).replace(/[^A-Za-z0-9._-]+/g, "_");
  const parts = ["loupe"];
  if (model) parts.push(clean(model));
  if (analysis) parts.push(clean(analysis));
  if (layer !== undefined && layer !== null && head !== undefined && head !== null) parts.push(`L${clean(layer)}H${clean(head)}`);
  if (iteration !== undefined && iteration !== null) parts.push(`it${clean(iteration)}`);
  if (part) parts.push(clean(part));
  return parts.join("-");
}

/** The title a saved image carries: `<model> · <analysis> · L<layer>H<head> · iteration <i> · <part>`, the parts given. */
export function chartTitle({ model, analysis, layer, head, iteration, part } = {}) {
  const parts = [model, analysis];
  if (layer !== undefined && layer !== null && head !== undefined && head !== null) parts.push(`L${layer}H${head}`);
  if (iteration !== undefined && iteration !== null) parts.push(`iteration ${iteration}`);
  parts.push(part);
  return parts.filter((p) => p !== undefined && p !== null && p !== "").join(" · ");
}

/** Save a drawn chart as an image (`format` png or svg), named by its chart name and titled with it:
 * the title is added to a copy of the figure for the file only, never to the chart on the page. */
export function saveImage(el, format) {
  const name = el._loupeChart ?? {};
  const layout = { ...el.layout, title: { text: plotlyText(chartTitle(name)), font: { size: 13 } } };
  layout.margin = { ...(el.layout.margin ?? {}), t: Math.max(48, el.layout.margin?.t ?? 0) };
  const { width, height } = el._fullLayout;
  return Plotly().downloadImage({ data: el.data, layout }, { format, filename: fileName(name), width, height });
}

// One object per button for the page's life: Plotly.react compares configs by value and a function
// by identity, so a fresh button on every draw made each redraw a full new plot.
const imageButtons = {};
const imageButton = (format) =>
  (imageButtons[format] ??= {
    name: `Download plot as ${format.toUpperCase()}`,
    title: `Download plot as ${format.toUpperCase()}`,
    icon: format === "png" ? Plotly().Icons.camera : Plotly().Icons.disk,
    click: (el) => saveImage(el, format),
  });

/** The config of every chart: no Plotly logo, no cloud or Chart Studio button; PNG and SVG buttons
 * save it named (toImageButtonOptions.filename) and titled by its chart name `name` (saveImage). */
export function config(name = {}) {
  return {
    displaylogo: false,
    showSendToCloud: false,
    showEditInChartStudio: false,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "toImage"],
    modeBarButtonsToAdd: [imageButton("png"), imageButton("svg")],
    toImageButtonOptions: { format: "png", filename: fileName(name) },
  };
}

// Plots follow their element's size, not only the window's: opening the head panel narrows the overview.
// The first notice of an element only records its size: Plotly has just drawn at that size, and a
// resize then would draw everything again (a second 1024 x 1024 heatmap).
const resizer = new ResizeObserver((entries) => {
  for (const { target, contentRect } of entries) {
    const size = `${Math.round(contentRect.width)}x${Math.round(contentRect.height)}`;
    if (target._loupeSize !== undefined && target._loupeSize !== size && target._fullLayout) Plotly().Plots.resize(target);
    target._loupeSize = size;
  }
});

/** Draw (or redraw) a chart with the page's defaults; `name` names and titles its images (fileName, chartTitle). Returns Plotly's promise. */
export function draw(el, traces, layout, name = {}) {
  el._loupeChart = name; // what saveImage names and titles it by
  const drawn = Plotly().react(el, traces, { ...BASE_LAYOUT, ...layout }, config(name));
  resizer.observe(el);
  return drawn;
}

/** Remove a chart from its element (its data, listeners and resize watch): the element shows something else now. */
export function purge(el) {
  resizer.unobserve(el);
  if (el._fullLayout) Plotly().purge(el);
}

/** Change a drawn chart's layout (e.g. its ticks after a zoom). Returns Plotly's promise. */
export function relayout(el, update) {
  return Plotly().relayout(el, update);
}

/** Call `handler(point)` on a click on a chart point, replacing any earlier click handler. */
export function onClick(el, handler) {
  el.removeAllListeners?.("plotly_click");
  el.on("plotly_click", (event) => {
    const point = event.points?.[0];
    if (point) handler(point);
  });
}

/** Escape &, < and > so Plotly shows the string as written (it decodes these entities back). */
export function plotlyText(value) {
  return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** A token as a label, every space, newline, tab and control character made visible (" upon" shows
 * as "␣upon"), so a token's boundaries read as the tokenizer drew them. */
export function displayToken(token) {
  return token
    .replace(/ /g, "␣")
    .replace(/\n/g, "↵")
    .replace(/\t/g, "⇥")
    .replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** Fill `el` with a token as text (never HTML), each newline and tab as its own fixed-width glyph
 * box (`.glyph`), so "\n\n\n" reads as three ↵ side by side, never one smudge. */
export function fillToken(el, token) {
  const parts = displayToken(token).split(/([↵⇥])/).filter(Boolean);
  el.replaceChildren(...parts.map((part) => {
    if (part !== "↵" && part !== "⇥") return document.createTextNode(part);
    const glyph = Object.assign(document.createElement("span"), { className: "glyph", textContent: part });
    return glyph;
  }));
}

/** Unique categorical labels for a token list: the token, then its position as a subscript. */
export function tokenLabels(tokens) {
  return tokens.map((token, pos) => `${plotlyText(displayToken(token))}<sub>${pos}</sub>`);
}

/** Token chips (as text, never HTML) in `el`; `selected` (a position) is marked. */
export function renderTokens(el, tokens, { selected = null } = {}) {
  el.replaceChildren(
    ...tokens.map((token, pos) => {
      const chip = document.createElement("span");
      chip.className = pos === selected ? "token selected" : "token";
      chip.textContent = displayToken(token); // user data: text, never HTML
      chip.title = `position ${pos}`;
      return chip;
    }),
  );
}
