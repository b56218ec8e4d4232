"""Builds a tiny, untrained but complete checkpoint (codec + tokenizers + LM) from a tiny built-in corpus.

Used by the API, CLI and server tests: the weights are random, so outputs are noise, but every piece of
the real path runs (tokenizers fitted on the corpus, the real codec and LM classes, the packaging).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from unisono.codec import Codec, CodecConfig
from unisono.data.synth import synthesize
from unisono.data.tokenize import load_codec_dir, tokenize_corpus
from unisono.inference import Pipeline
from unisono.lm import LMConfig, UnisonoLM
from unisono.vocab import Vocab


def build_tiny_checkpoint(root: Path, pattern: str = "delay") -> Path:
    corpus = root / "corpus"
    if not (corpus / "stats.json").exists():
        # espeak-ng alone: the API/CLI/server tests need a checkpoint, not natural voices (test_synth_engines has them)
        synthesize(corpus, hours=0.01, seed=5, workers=1, progress=False, engines={"espeak": 1.0})
    codec_dir = root / "codec"
    if not (codec_dir / "model.safetensors").exists():
        torch.manual_seed(0)
        cfg = CodecConfig(encoder_channels=8, latent_dim=16, decoder_dim=32, decoder_blocks=1, num_codebooks=2,
                          codebook_size=64)
        Codec(cfg).save_pretrained(codec_dir)
    shards = root / "shards"
    if not (shards / "vocab.json").exists():
        tokenize_corpus(corpus, shards, functools.partial(load_codec_dir, str(codec_dir)), bpe_size=300,
                        semantic_units=16, progress=False, splits=("train",), tasks=["tts", "vc"])
    vocab = Vocab.load(shards / "vocab.json")
    torch.manual_seed(0)
    lm = UnisonoLM.from_config(LMConfig(vocab_size=vocab.size, num_streams=vocab.num_codebooks, pad_id=vocab.pad_id,
                                        pattern=pattern, d_model=32, n_layers=1, n_heads=2, max_seq_len=1024))
    lm_dir = root / f"lm-{pattern}"
    lm.save_pretrained(lm_dir, vocab_json=shards / "vocab.json")
    return Pipeline.package(lm_dir, shards, root / f"ckpt-{pattern}")
