"""Inference: a checkpoint as a pipeline (:class:`Pipeline`), each task's inputs/prompt/sampling/output as a
:class:`TaskIO`, streaming and listen-and-revise."""

from unisono.inference.pipeline import Pipeline
from unisono.inference.taskio import Decoded, PreparedPrompt, TaskIO, target_phases, until_end
from unisono.inference.types import (
           AudioOutput,
           GenerationCancelled,
           InputKind,
           TaskSpec,
           TextOutput,
           check_input_names,
           input_name,
           task_spec,
)

__all__ = ["AudioOutput", "Decoded", "GenerationCancelled", "InputKind", "Pipeline", "PreparedPrompt", "TaskIO",
           "TaskSpec", "TextOutput", "check_input_names", "input_name", "target_phases", "task_spec", "until_end"]
