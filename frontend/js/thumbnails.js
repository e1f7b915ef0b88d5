// Small multiples: every head's pooled pattern as a tiny canvas heatmap, one button per head.

import { PALETTE } from "./colormap.js";

function drawThumbnail(canvas, pixels) {
  const size = pixels.length; // pixels: [row][col] of 0..255
  canvas.width = canvas.height = size;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(size, size);
  for (let r = 0; r < size; r++) {
    for (let c = 0; c < size; c++) {
      const v = pixels[r][c];
      const o = (r * size + c) * 4;
      image.data.set([...PALETTE[v], 255], o); // the Plotly heatmap's colours
    }
  }
  ctx.putImageData(image, 0, 0);
}

/** Fill `el` with a layer x head grid of thumbnails ([layer][head][row][col]); onSelect(layer, head) on click.
 * `attentionLayers` (a hybrid stack's layers with attention): the others show as disabled. */
export function renderThumbnails(el, thumbnails, { selected = null, onSelect, attentionLayers = null }) {
  el.replaceChildren();
  const nHeads = thumbnails[0]?.length ?? 0;
  el.style.setProperty("--n-heads", nHeads);
  thumbnails.forEach((heads, layer) => {
    heads.forEach((pixels, head) => {
      const name = `L${layer}H${head}`;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "thumb";
      button.dataset.testid = `thumb-${name}`;
      button.dataset.layer = layer;
      button.dataset.head = head;
      button.title = `Open the attention pattern of layer ${layer}, head ${head}`;
      if (selected && selected.layer === layer && selected.head === head) button.classList.add("selected");
      if (attentionLayers && !attentionLayers.includes(layer)) {
        button.disabled = true; // a state-space or convolution layer: no pattern to open
        button.title = `Layer ${layer} has no attention`;
      }
      const canvas = document.createElement("canvas");
      drawThumbnail(canvas, pixels);
      const caption = document.createElement("span");
      caption.textContent = name;
      button.append(canvas, caption);
      button.addEventListener("click", () => onSelect(layer, head));
      el.append(button);
    });
  });
}
