"""``unisono inspect``: the command line of :mod:`unisono.data.inspect`."""

from __future__ import annotations

import argparse

from unisono.data import inspect
from unisono.data.inspect import describe_example, find_tokenizers
from unisono.data.store import open_examples
from unisono.fileio import read_json
from unisono.text.tokenizers import TokenizerSet

DESCRIPTION = inspect.__doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("shards", help="output directory of `unisono tokenize` (or one split directory in it)")
    p.add_argument("--task", help="show examples of this task only")
    p.add_argument("--split", default="train", help="split to read (default: %(default)s)")
    p.add_argument("--n", type=int, default=2, help="number of examples (default: %(default)s)")
    p.add_argument("--raw", action="store_true", help="also print the first frames as token names")


def main(args) -> int:
    reader = open_examples(args.shards, tasks=[args.task] if args.task else None, split=args.split)
    toks = TokenizerSet.load(find_tokenizers(reader.dir))
    codec_info = find_tokenizers(reader.dir).parent / "codec.json"
    frame_rate = read_json(codec_info).get("frame_rate") if codec_info.exists() else None
    held = (f"{len(reader.shards)} shard(s)" if hasattr(reader, "shards")
            else f"a token store of {len(reader.items)} examples")
    print(f"{reader.dir}: {held}, {reader.vocab}")
    for i, ex in enumerate(reader):
        if i >= args.n:
            break
        print(describe_example(reader.vocab, toks, ex, frame_rate=frame_rate))
        if args.raw:
            for t in range(min(12, ex["frames"].shape[0])):
                row = " ".join(f"{reader.vocab.name_of(x):>14}" for x in ex["frames"][t].tolist())
                print(f"    {t:4d} {'L' if ex['loss_mask'][t].any() else ' '} {row}")
    return 0
