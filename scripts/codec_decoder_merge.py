"""Put decoder weights trained elsewhere (``scripts/h200_codec_decoder.sh``) into a codec directory.

    python scripts/codec_decoder_merge.py --codec CODEC_DIR --decoder VARIANT.decoder.safetensors --out NEW_DIR
        [--precision int8]

The encoder and codebooks of ``--codec`` are kept as they are (the same codes), the ``decoder.*`` tensors are
replaced; the result is written with :func:`unisono.weights.save_weights` in ``--precision`` (the shipped codec is
int8) into a new directory, which must not exist.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unisono.errors import UnisonoError  # noqa: E402


def merge(codec_dir, decoder_file, out, precision: str = "int8") -> Path:
    from unisono.codec import Codec
    from unisono.weights import PRECISIONS, load_weights

    if precision not in PRECISIONS:
        raise UnisonoError(f"--precision must be one of {', '.join(PRECISIONS)}")
    out = Path(out)
    if out.exists():
        raise UnisonoError(f"--out {out} exists; write into a new directory")
    codec = Codec.from_pretrained(codec_dir)
    state = codec.state_dict()
    decoder = load_weights(decoder_file)
    expected = {k for k in state if k.startswith("decoder.")}
    if set(decoder) != expected:
        missing, extra = sorted(expected - set(decoder)), sorted(set(decoder) - expected)
        raise UnisonoError(f"{decoder_file} does not fit the decoder of {codec_dir} (missing {missing[:3]}, "
                           f"unexpected {extra[:3]}): was it trained with another decoder config?")
    for k, v in decoder.items():
        if v.shape != state[k].shape:
            raise UnisonoError(f"{decoder_file}: {k} has shape {tuple(v.shape)}, the codec's {tuple(state[k].shape)}")
        state[k] = v.float()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    codec.load_state_dict(state)
    codec.save_pretrained(tmp, precision)
    tmp.rename(out)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", required=True, help="codec directory whose encoder and codebooks are kept")
    p.add_argument("--decoder", required=True, help="safetensors file of decoder.* tensors")
    p.add_argument("--out", required=True, help="new codec directory")
    p.add_argument("--precision", default="int8", help="weight precision of the result: float32, float16 or int8")
    args = p.parse_args(argv)
    try:
        print(merge(args.codec, args.decoder, args.out, args.precision))
    except UnisonoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
