// Analysis cards built from their plot module's declaration (`card`: title, button, hint, fields,
// optional build hook), and the Form a module reads its params from and restores them into.

const FIELD_ATTRIBUTES = ["min", "max", "step", "placeholder"];

/** The id of an analysis' run button: `run-<name with dashes>` (e.g. run-head-scores). */
export const runButtonId = (name) => `run-${name.replace(/_/g, "-")}`;

/** A hint: a string, or a list of strings and {code} parts, always as text. */
function hintNodes(hint) {
  return (Array.isArray(hint) ? hint : [hint]).map((part) =>
    typeof part === "string" ? document.createTextNode(part) : Object.assign(document.createElement("code"), { textContent: part.code }),
  );
}

function fieldElement(field) {
  let input;
  if (field.type === "select") {
    input = document.createElement("select");
    input.append(...field.options.map(([value, label]) => new Option(label, value, value === field.default, value === field.default)));
  } else {
    input = Object.assign(document.createElement("input"), { type: field.type ?? "number" });
    if (field.default !== undefined && field.default !== null) input.value = String(field.default);
  }
  input.id = field.id;
  input.dataset.testid = field.id;
  input.name = field.name;
  for (const attribute of FIELD_ATTRIBUTES) {
    if (field[attribute] !== undefined) input.setAttribute(attribute, String(field[attribute]));
  }
  const label = document.createElement("label");
  label.append(`${field.label} `, input);
  return { label, input };
}

/** The fields of one card: typed values out, values back in. Modules see only this. */
/** A hidden file input, the link-style button that opens it and a hint line for what was chosen,
 * appended to the card's slot: (the input, the hint). `prefix` names them: `<prefix>-file`,
 * `<prefix>-upload`, `<prefix>-file-info`. */
export function fileChooser(form, { prefix, accept, label }) {
  const file = Object.assign(document.createElement("input"), { id: `${prefix}-file`, type: "file", accept, hidden: true });
  file.dataset.testid = `${prefix}-file`;
  const upload = Object.assign(document.createElement("button"), {
    id: `${prefix}-upload`, type: "button", className: "link", textContent: label,
  });
  const info = Object.assign(document.createElement("p"), { id: `${prefix}-file-info`, className: "hint" });
  form.slot.append(file, upload, info);
  upload.addEventListener("click", () => file.click());
  return { file, info };
}

export class Form {
  constructor(plot, card, inputs, { showError }) {
    this.plot = plot;
    this.card = card; // the card's <section>
    this.slot = card.querySelector("[data-role=extra]"); // where a build hook puts its own widgets
    this.inputs = inputs; // field name -> element
    this.showError = showError;
  }

  field(name) {
    return this.inputs.get(name);
  }

  /** A field's value: a number for number fields, undefined when left empty (the server's default). */
  value(name) {
    const input = this.inputs.get(name);
    if (input.type !== "number") return input.value;
    return input.value === "" ? undefined : Number(input.value);
  }

  /** Every declared field's value, by param name (empty fields left out). */
  values() {
    const values = {};
    for (const name of this.inputs.keys()) {
      const value = this.value(name);
      if (value !== undefined) values[name] = value;
    }
    return values;
  }

  set(name, value) {
    this.inputs.get(name).value = value ?? "";
  }

  /** Set every declared field that `params` holds. */
  fill(params = {}) {
    for (const name of this.inputs.keys()) {
      if (params[name] !== undefined && params[name] !== null) this.set(name, params[name]);
    }
  }
}

/** The card of a plot module: a <section> with its fields, its build hook's widgets and its run button. */
export function buildCard(plot, { onRun, showError }) {
  const { title, button, hint, fields = [], build } = plot.card;
  const card = Object.assign(document.createElement("section"), { className: "card analysis-card" });
  card.dataset.analysis = plot.name;
  card.dataset.testid = `card-${plot.name}`;
  const heading = Object.assign(document.createElement("span"), { className: "field-label", textContent: title });
  card.append(heading);
  const inputs = new Map();
  if (fields.length) {
    const params = Object.assign(document.createElement("div"), { className: "params" });
    for (const field of fields) {
      const { label, input } = fieldElement(field);
      inputs.set(field.name, input);
      params.append(label);
    }
    card.append(params);
  }
  const extra = document.createElement("div");
  extra.dataset.role = "extra";
  const run = Object.assign(document.createElement("button"), { type: "button", className: "primary", textContent: button });
  run.id = runButtonId(plot.name);
  run.dataset.testid = run.id;
  run.dataset.run = plot.name;
  card.append(extra, run);
  if (hint) {
    const note = Object.assign(document.createElement("p"), { className: "hint" });
    note.append(...hintNodes(hint));
    card.append(note);
  }
  const form = new Form(plot, card, inputs, { showError });
  build?.(form);
  if (!extra.childElementCount) extra.remove();
  run.addEventListener("click", () => onRun(plot, form));
  return form;
}
