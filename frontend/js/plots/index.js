// The frontend registry: one module per backend analysis (registry id = module `name`), in card order.
// Adding an analysis: its module here, and nothing in main.js or state.js.

import * as ablation from "./ablation.js";
import * as attention from "./attention.js";
import * as dataAttribution from "./data_attribution.js";
import * as emergence from "./emergence.js";
import * as exitGate from "./exit_gate.js";
import * as hallucination from "./hallucination.js";
import * as hallucinationEval from "./hallucination_eval.js";
import * as headMetrics from "./head_metrics.js";
import * as headScores from "./head_scores.js";
import * as logitAttribution from "./logit_attribution.js";
import * as logitLens from "./logit_lens.js";
import * as patching from "./patching.js";
import * as probes from "./probes.js";

export const PLOTS = [
  attention, headScores, headMetrics, logitLens, logitAttribution, ablation, patching, probes, emergence, dataAttribution, exitGate, hallucination, hallucinationEval,
];

/** Registry id -> module. */
export const BY_NAME = new Map(PLOTS.map((plot) => [plot.name, plot]));
