"""The built-in corpus generator (``unisono synth``): see ``docs/corpus.md`` for what it writes."""

from .build import make_plan, synthesize

__all__ = ["make_plan", "synthesize"]
