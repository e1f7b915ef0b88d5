// The drawing script of a standalone HTML report (backend/loupe/export.py inlines it beside Plotly and
// the analysis' JSON): every [iteration][layer][head] array of the result as the page's layer x head
// grid, one iteration at a time. A classic script, not a module: a report opens from a file.
// Everything from the data is shown as text (textContent) or escaped before Plotly sees it.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("loupe-data").textContent);
  const result = data.result || {};
  const escape = (value) => String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
  const FONT = { family: "Inter, system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#1f2937" };
  const CONFIG = { displaylogo: false, showSendToCloud: false, showEditInChartStudio: false };

  const created = data.created_at ? ` · ${data.created_at}` : "";
  document.getElementById("report-meta").textContent =
    `${data.analysis} of ${data.model} · id ${data.id} · params ${JSON.stringify(data.params)}${created} · Loupe ${data.loupe_version}`;
  document.getElementById("report-text").textContent = data.text ?? "";

  const isGrid = (v, sizes) =>
    sizes.length === 0 ? typeof v === "number" || v === null
      : Array.isArray(v) && v.length === sizes[0] && v.every((item) => isGrid(item, sizes.slice(1)));
  const sizes = [result.n_iterations, result.n_layers, result.n_heads];

  /** [field, array] for every [iteration][layer][head] array under `value`, fields dotted. */
  function grids(value, field) {
    if (isGrid(value, sizes)) return [[field, value]];
    if (!value || typeof value !== "object" || Array.isArray(value)) return [];
    return Object.entries(value).flatMap(([key, item]) => grids(item, field ? `${field}.${key}` : key));
  }

  const charts = document.getElementById("report-charts");
  for (const [field, values] of grids(result, "")) {
    const numbers = values.flat(2).filter((v) => typeof v === "number");
    const zmin = Math.min(0, ...numbers);
    const zmax = Math.max(1, ...numbers);
    const section = document.createElement("section");
    const heading = document.createElement("h2");
    heading.textContent = field;
    section.append(heading);
    const select = document.createElement("select");
    select.setAttribute("aria-label", `${field}: iteration`);
    values.forEach((_, i) => select.append(new Option(`iteration ${i}`, String(i))));
    if (values.length > 1) section.append(select);
    const el = document.createElement("div");
    el.className = "chart";
    el.dataset.field = field;
    section.append(el);
    charts.append(section);
    const drawIteration = (iteration) => {
      const grid = values[iteration]; // [layer][head]
      const nHeads = grid[0]?.length ?? 0;
      const trace = {
        type: "heatmap", z: grid, x: [...Array(nHeads).keys()], y: [...Array(grid.length).keys()], zmin, zmax,
        colorscale: "Viridis", colorbar: { thickness: 12, outlinewidth: 0 }, xgap: 1, ygap: 1,
        hovertemplate: `L%{y}H%{x} ${escape(field)}: %{z:.3f}<extra></extra>`,
      };
      if (grid.length * nHeads <= 256) Object.assign(trace, { texttemplate: "%{z:.2f}", textfont: { size: 10 } });
      const loops = values.length > 1 ? ` · iteration ${iteration}` : "";
      const layout = {
        font: FONT, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", margin: { l: 56, r: 16, t: 40, b: 44 },
        title: { text: escape(`${data.model} · ${data.analysis} · ${field}${loops}`) },
        xaxis: { title: { text: "head" }, dtick: 1, showgrid: false, zeroline: false },
        yaxis: { title: { text: "layer" }, dtick: 1, autorange: "reversed", showgrid: false, zeroline: false },
      };
      el.dataset.iteration = String(iteration);
      window.Plotly.react(el, [trace], layout, CONFIG);
    };
    select.addEventListener("change", () => drawIteration(Number(select.value)));
    drawIteration(0);
  }
  if (!charts.children.length) {
    const note = document.createElement("p");
    note.textContent = "This analysis has no [iteration][layer][head] array to draw; all its data is in this file (the loupe-data script).";
    charts.append(note);
  }
  document.body.dataset.ready = "true";
})();
