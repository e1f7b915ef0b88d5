// The export menu of a view: the analysis' data (CSV, JSON), its standalone HTML report, and the
// view's first drawn chart as PNG or SVG. The same menu on every view: the files come from the API
// (GET /api/analyses/{id}/export.*, named by the server), the images from plotting.js' saveImage.

import { saveImage } from "./plotting.js";

const ITEMS = [
  { kind: "csv", label: "CSV" },
  { kind: "json", label: "JSON" },
  { kind: "html", label: "HTML report" },
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
    const image = kind === "png" || kind === "svg";
    const item = image
      ? Object.assign(document.createElement("button"), { type: "button", className: "link", textContent: label })
      : Object.assign(document.createElement("a"), { textContent: label, download: "" });
    item.dataset.export = kind;
    if (image) {
      item.addEventListener("click", () => {
        const chart = [...scope.querySelectorAll(".js-plotly-plot")].find((el) => el.offsetParent !== null && el._fullLayout);
        if (chart) saveImage(chart, kind);
        details.open = false;
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
  el.querySelector("[data-export=json]").download = head ? `${name}.json` : ""; // the slice route names no file
}
