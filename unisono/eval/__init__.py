"""Evaluation: metrics (``unisono.eval.metrics``), the scoring harness, corpus evaluation and reports.

    from unisono.eval import evaluate_dirs, evaluate_corpus, reference_system, copy_input_system
"""

from unisono.eval.corpus import copy_input_system, evaluate_corpus, reference_system
from unisono.eval.harness import evaluate_dirs
from unisono.eval.metrics import METRICS, Reference

__all__ = ["METRICS", "Reference", "copy_input_system", "evaluate_corpus", "evaluate_dirs",
           "reference_system"]
