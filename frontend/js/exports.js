// The export menu of a view: the analysis' data (CSV, JSON), its standalone HTML report, the view
// itself as one HTML file, and the view's first drawn chart as PNG or SVG. The same menu on every
// view: the files come from the API (GET /api/analyses/{id}/export.*, named by the server), the
// images from plotting.js' saveImage (a canvas, such as a long prompt's map, as its own PNG), the
// view's file from snapshot() here.

import { saveImage } from "./plotting.js";

const ITEMS = [
  { kind: "csv", label: "CSV" },
  { kind: "json", label: "JSON" },
  { kind: "html", label: "HTML report" },
  { kind: "view", label: "HTML of this view" },
  { kind: "png", label: "PNG" },
  { kind: "svg", label: "SVG" },
];

/** An export menu for the view `scope` (the element its charts are in); `testid` names it for tests. */
export function menu(scope, testid) {
  const details = Object.assign(document.createElement("details"), { className: "export-menu" });
  details.dataset.testid = testid;
  const summary = Object.assign(document.createElement("summary"), { textContent: "Export" });
  const list = Object.assign(document.createElement("div"), { className: "export-items" });
  for (const { kind, label } of ITEMS) {
    const image = kind === "png" || kind === "svg" || kind === "view";
    const item = image
      ? Object.assign(document.createElement("button"), { type: "button", className: "link", textContent: label })
      : Object.assign(document.createElement("a"), { textContent: label, download: "" });
    item.dataset.export = kind;
    if (image) {
      item.addEventListener("click", () => {
        details.open = false;
        if (kind === "view") return snapshot(scope, details.dataset.analysis);
        const chart = [...scope.querySelectorAll(".js-plotly-plot")].find((el) => el.offsetParent !== null && el._fullLayout);
        const canvas = [...scope.querySelectorAll("canvas[data-file-name]")].find((el) => el.offsetParent !== null);
        if (chart) saveImage(chart, kind);
        else if (canvas && kind === "png") saveCanvas(canvas);
      });
    } else {
      item.addEventListener("click", () => (details.open = false));
    }
    list.append(item);
  }
  details.append(summary, list);
  return details;
}

/** Point a menu's data links at an analysis, or, given `head` ({layer, head, iteration}), at that
 * head's pattern (CSV, and its JSON slice saved as `name`.json); the HTML report is always the analysis'. */
export function point(el, analysisId, { head = null, name = "" } = {}) {
  const base = `/api/analyses/${encodeURIComponent(analysisId)}`;
  const query = head ? new URLSearchParams({ layer: head.layer, head: head.head, iteration: head.iteration }) : null;
  const links = {
    csv: head ? `${base}/attention/export.csv?${query}` : `${base}/export.csv`,
    json: head ? `${base}/attention?${query}` : `${base}/export.json`,
    html: `${base}/export.html`,
  };
  for (const [kind, href] of Object.entries(links)) el.querySelector(`[data-export=${kind}]`).href = href;
  el.dataset.analysis = analysisId;
  el.querySelector("[data-export=json]").download = head ? `${name}.json` : ""; // the slice route names no file
}

/** Save a drawn canvas as PNG at its own pixels, named by its data-file-name. */
function saveCanvas(canvas) {
  canvas.toBlob((blob) => download(blob, `${canvas.dataset.fileName}.png`), "image/png");
}

function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

const text = (url) => fetch(url).then((response) => {
  if (!response.ok) throw new Error(`${url}: ${response.status}`);
  return response.text();
});

/** Text safe inside a <script> element: nothing that could close it. */
const inScript = (source) => source.replace(/<\/(script)/gi, "<\\/$1").replace(/<!--/g, "<\\!--");

async function sha256(source) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(source));
  return `'sha256-${btoa(String.fromCharCode(...new Uint8Array(digest)))}'`;
}

/** Save the view `scope` as one HTML file that opens from disk with no server and shows what the page
 * shows: its text as rendered (the DOM serialised, so token strings stay text), every drawn chart
 * redrawn from its own figure (data and layout, Plotly inline), and the analysis' stored record. Its
 * own CSP runs only its inline scripts and allows no request. */
export async function snapshot(scope, analysisId) {
  const clone = scope.cloneNode(true);
  const copies = [...clone.querySelectorAll(".js-plotly-plot")]; // in the same order as the live charts
  const figures = [];
  [...scope.querySelectorAll(".js-plotly-plot")].forEach((live, i) => {
    const blank = document.createElement("div"); // drawn again from the figure when the file opens
    if (live._fullLayout) {
      blank.dataset.figure = figures.push(JSON.parse(window.Plotly.Plots.graphJson(live, false, "keepdata"))) - 1;
      blank.style.height = live.style.height || `${live.offsetHeight}px`;
    }
    copies[i].replaceWith(blank);
  });
  const canvases = [...clone.querySelectorAll("canvas")]; // in the same order as the live ones
  [...scope.querySelectorAll("canvas")].forEach((live, i) => {
    const image = Object.assign(document.createElement("img"), { src: live.toDataURL("image/png"), alt: "" });
    image.style.cssText = live.style.cssText; // drawn pixels, at the size they were shown
    canvases[i].replaceWith(image);
  });
  clone.querySelectorAll(".export-menu, button, input, select").forEach((el) => el.remove()); // nothing to press offline
  const [plotly, drawer, css, record] = await Promise.all([
    text(document.getElementById("plotly-js").src), text("/report/view.js"), text("/css/loupe.css"),
    fetch(`/api/analyses/${encodeURIComponent(analysisId)}`).then((r) => r.json()),
  ]);
  const scripts = [inScript(plotly), inScript(drawer)];
  // hashes need WebCrypto, which a page served over plain http from another host lacks: no CSP then
  const hashes = window.crypto?.subtle ? (await Promise.all(scripts.map(sha256))).join(" ") : null;
  const policy = hashes && `default-src 'none'; script-src ${hashes}; style-src 'unsafe-inline'; img-src data: blob:; ` +
    "connect-src 'none'; base-uri 'none'; form-action 'none'";
  const title = document.createElement("h1");
  title.textContent = `Loupe · ${record.model} · ${record.analysis}`;
  const html = [
    "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
    policy ? `<meta http-equiv="Content-Security-Policy" content="${policy}">` : "",
    `<title>${title.innerHTML}</title><style>${css.replace(/<\/style/gi, "")}</style></head><body>`,
    title.outerHTML, clone.outerHTML,
    `<script type="application/json" id="loupe-figures">${inScript(JSON.stringify(figures))}</script>`,
    `<script type="application/json" id="loupe-data">${inScript(JSON.stringify(record))}</script>`,
    `<script>${scripts[0]}</script>`, `<script>${scripts[1]}</script>`, "</body></html>",
  ].join("\n");
  download(new Blob([html], { type: "text/html" }), `loupe-${record.model}-${record.analysis}-${analysisId.slice(0, 8)}-view.html`.replace(/[^A-Za-z0-9._-]+/g, "_"));
}
