// The history panel: the newest analyses (model, analysis, the text's start, when), each reopening
// its view; a delete button on each (the server asks for the token where it has one).

import * as api from "./api.js";

const SHOWN = 12;

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
}

/** Fill `el` with the newest analyses; onOpen(id) reopens one, onError(err) shows a failure. */
export async function refreshHistory(el, { onOpen, onError }) {
  let page;
  try {
    page = await api.listAnalyses({ limit: SHOWN });
  } catch (err) {
    onError(err);
    return;
  }
  const rows = page.items.map((item) => {
    const row = document.createElement("li");
    row.className = `history-item ${item.status}`;
    row.dataset.id = item.id;
    const open = Object.assign(document.createElement("button"), { type: "button", className: "link history-open" });
    open.textContent = `${item.analysis} · ${item.model}`; // user data: text, never HTML
    open.title = item.text_start ?? "";
    open.disabled = item.status === "error";
    open.addEventListener("click", () => onOpen(item.id));
    const detail = document.createElement("small");
    detail.textContent = [item.text_start ? `“${item.text_start}”` : "", item.status === "done" ? "" : item.status, when(item.created_at)]
      .filter(Boolean).join(" · ");
    const remove = Object.assign(document.createElement("button"), { type: "button", className: "icon", textContent: "×" });
    remove.setAttribute("aria-label", `Delete ${item.analysis} on ${item.model}`);
    remove.addEventListener("click", async () => {
      try {
        await api.deleteAnalysis(item.id);
        row.remove();
      } catch (err) {
        onError(err);
      }
    });
    row.append(open, remove, detail);
    return row;
  });
  el.replaceChildren(...rows);
  el.dataset.total = page.total;
}
