"""The unisono language model: transformer core, codebook patterns, sampling."""

from unisono.lm.config import PATTERNS, LMConfig
from unisono.lm.model import DelayLM, FlatLM, MultiscaleLM, UnisonoLM

__all__ = ["PATTERNS", "LMConfig", "UnisonoLM", "DelayLM", "FlatLM", "MultiscaleLM"]
