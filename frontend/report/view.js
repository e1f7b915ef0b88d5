// Draws a saved view (exports.js snapshot): every chart from its own figure, as the page drew it.
// Plain script, no module: the file opens from disk with no server.
(function () {
  const figures = JSON.parse(document.getElementById("loupe-figures").textContent);
  for (const el of document.querySelectorAll("[data-figure]")) {
    const figure = figures[Number(el.dataset.figure)];
    window.Plotly.newPlot(el, figure.data, figure.layout, { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["toImage"] });
  }
})();
