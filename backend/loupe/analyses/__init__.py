"""Analyses: pure functions from a model, inputs and params to a typed result, registered by name."""

from . import attention, head_metrics, head_scores  # noqa: F401  (registration happens on import)
from . import hallucination, hallucination_eval  # noqa: F401
from . import ablation, data_attribution, emergence, exit_gate, logit_attribution, logit_lens, patching, probes  # noqa: F401
from .registry import REGISTRY, AnalysisOutput, AnalysisSpec, Inputs, register  # noqa: F401
