"""``unisono export``: the command line of :mod:`unisono.data.export`."""

from __future__ import annotations

import argparse
from pathlib import Path

from unisono.data import export
from unisono.data.tokenize import load_codec_dir
from unisono.errors import UnisonoError
from unisono.fileio import check_writable

DESCRIPTION = export.__doc__ + """
examples:
  unisono export --data corpus --codec runs/codec --split train --out corpus_train_shar
  unisono export --data my_cuts.jsonl.gz --codec CKPT/codec --num-codebooks 4 --out my_shar
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, action="append", metavar="[SPLIT=]PATH",
                   help="a unisono corpus, a Lhotse cuts manifest or Shar folder (as `unisono tokenize --data`)")
    p.add_argument("--codec", required=True, help="codec directory whose codes are exported")
    p.add_argument("--out", required=True, help="new folder for the Shar (refused if it exists)")
    p.add_argument("--split", default="train", help="split to export (default: %(default)s)")
    p.add_argument("--num-codebooks", type=int, help="export the first K codebooks (default: all of the codec's)")
    p.add_argument("--shard-size", type=int, default=1000, help="cuts per Shar shard (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args) -> int:
    if Path(args.out).exists():
        raise UnisonoError(f"--out {args.out} exists; export into a new folder")
    check_writable(args.out, "dir", "--out")
    codec = load_codec_dir(args.codec).eval()
    res = export.export_shar(args.data, codec, args.out, args.split, args.num_codebooks, args.shard_size,
                             progress=not args.no_progress)
    print(f"wrote {args.out}: {res['cuts']} cuts with codes [T, {res['num_codebooks']}] at {res['frame_rate']:g} Hz; "
          f"fields {', '.join(res['fields'])} (read back with lhotse CutSet.from_shar(in_dir=...))")
    return 0
