"""Neural audio codecs: the project's own RVQ codec and adapters for pretrained Hugging Face codecs.

``load_codec(dir)`` returns a module with ``sample_rate`` (Hz), ``frame_rate`` (Hz), ``num_codebooks``,
``codebook_size``, ``encode(wav [B,1,S]) -> codes [B,K,T]`` and ``decode(codes) -> wav [B,1,S']``,
whichever kind of codec ``dir/config.json`` describes.
"""

from __future__ import annotations

import json
from pathlib import Path

from unisono.codec.model import Codec, CodecConfig
from unisono.errors import UnisonoError

__all__ = ["Codec", "CodecConfig", "load_codec"]


def load_codec(directory, map_location: str = "cpu"):
    """Load the codec saved in ``directory`` (project codec or a transformers Encodec/DAC/Mimi/Xcodec one)."""
    d = Path(directory)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise UnisonoError(f"{d} has no config.json; pass a codec directory (made by 'unisono codec train' "
                           "or a Hugging Face Encodec/DAC/Mimi/Xcodec model directory)")
    try:
        model_type = json.loads(cfg_path.read_text()).get("model_type", "")
    except json.JSONDecodeError as e:
        raise UnisonoError(f"{cfg_path} is not valid JSON ({e})") from None
    if model_type == "unisono-codec":
        return Codec.from_pretrained(d, map_location)
    from unisono.codec.adapters import ADAPTERS, load_adapter  # noqa: PLC0415 (needs transformers when used)

    if model_type in ADAPTERS:
        return load_adapter(d, model_type, map_location)
    raise UnisonoError(f"{cfg_path} has model_type {model_type!r}; supported: unisono-codec, {', '.join(ADAPTERS)}")
