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
           input_name,
)

__all__ = ["AudioOutput", "Decoded", "GenerationCancelled", "InputKind", "Pipeline", "PreparedPrompt", "TaskIO",
           "TaskSpec", "TextOutput", "input_name", "target_phases", "until_end"]
