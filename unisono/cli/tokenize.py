"""``unisono tokenize``: the command line of :mod:`unisono.data.tokenize`."""

from __future__ import annotations

import argparse
import functools
import os
import sys

from unisono.data import tokenize
from unisono.data.tokenize import load_codec_dir, skip_summary, tokenize_corpus
from unisono.errors import UnisonoError
from unisono.fileio import check_writable

DESCRIPTION = tokenize.__doc__


def print_stats(stats: dict, file=None) -> None:
    file = file or sys.stdout
    print(f"{'split/task':<28}{'examples':>10}{'skipped':>9}", file=file)
    for key, c in stats["per_task"].items():
        print(f"{key:<28}{c.get('examples', 0):>10}{c.get('skipped', 0):>9}", file=file)
    feats = stats.get("feature_seconds_now", 0.0)
    feats = f", {feats / 3600:.3f} h to the feature encoder" if feats else ""
    print(f"shards: {stats['shards_made_now']} made now, {stats['shards_done_before']} already done; "
          f"{stats['examples_made_now']} examples ({stats['audio_seconds_now'] / 3600:.3f} h of target/input audio, "
          f"{stats['encoded_seconds_now'] / 3600:.3f} h passed to the codec{feats}) "
          f"in {stats['tokenize_seconds_now']:.1f} s", file=file)
    if stats["skipped"]:
        summary = skip_summary(stats["skipped"])
        print(f"skipped {len(stats['skipped'])} item(s) for {len(summary)} reason(s) (all in stats.json):", file=file)
        for why, n, cut_id in summary[:8]:
            print(f"  {n} x {why} (e.g. {cut_id})", file=file)


def print_store_stats(stats: dict, file=None) -> None:
    file = file or sys.stdout
    for split, st in stats["splits"].items():
        ex = st["examples"]
        size = st.get("bytes", {}).get("file")
        made = f"{size / 2**20:.2f} MiB, made in {st['seconds']:.1f} s" if st["made_now"] else "kept (already made)"
        print(f"{split}: {sum(ex.values())} examples of {len(ex)} tasks, {st['skipped']} skipped, "
              f"{st['primary_seconds'] / 3600:.3f} h of primary audio; store {made}", file=file)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, action="append", metavar="[SPLIT=]PATH",
                   help="a corpus made by `unisono synth`, a Lhotse cuts manifest (.jsonl, .jsonl.gz) or a Lhotse Shar "
                        "folder; repeatable; SPLIT=PATH gives a source to one split (a Lhotse source without one is "
                        "split into train and valid; docs/own-data.md)")
    p.add_argument("--codec", required=True, help="codec directory (loaded with unisono.codec.load_codec)")
    p.add_argument("--out", required=True, help="output directory for tokenizers, vocab.json and shards")
    p.add_argument("--tasks", default="", help="comma-separated tasks (default: every task template)")
    p.add_argument("--splits", default="train,valid,test",
                   help="comma-separated splits; one the data lacks is left out with a note (default: %(default)s)")
    p.add_argument(
        "--jobs", type=int, default=min(4, os.cpu_count() or 1), help="worker processes (default: %(default)s)"
    )
    p.add_argument("--shard-size", type=int, default=256, help="examples per shard (default: %(default)s)")
    p.add_argument(
        "--rank", type=int, default=int(os.environ.get("RANK", 0)), help="this process's rank (default: $RANK or 0)"
    )
    p.add_argument(
        "--world-size",
        type=int,
        default=int(os.environ.get("WORLD_SIZE", 1)),
        help="number of tokenizing processes; each makes every world-size-th shard (default: $WORLD_SIZE or 1)",
    )
    p.add_argument("--templates", action="append", default=[], help="extra task template YAML (repeatable)")
    p.add_argument(
        "--fill",
        choices=("pad", "repeat"),
        default="pad",
        help="how a non-audio token fills the K streams of its frame (default: %(default)s; see docs/tokens.md)",
    )
    p.add_argument("--vocab", help="keep this vocab.json's layout (e.g. a checkpoint's, to fine-tune on new data or "
                   "new tasks); the --tasks it lacks take free slots, every other id stays; use with --tokenizers")
    p.add_argument(
        "--tokenizers", help="reuse these tokenizers (a SHARDS/tokenizers or checkpoint dir) instead of fitting"
    )
    p.add_argument(
        "--num-codebooks", type=int, help="codebooks used per frame (default: the --vocab's, else all of the codec's)"
    )
    p.add_argument("--bpe-size", type=int, default=2000, help="BPE vocabulary size (default: %(default)s)")
    p.add_argument("--semantic-units", type=int, default=500, help="k-means units for vc (default: %(default)s)")
    p.add_argument(
        "--semantic-features",
        choices=("auto", "hubert", "codec", "mel"),
        default="auto",
        help="features for the units: auto = hubert if --hubert is given, else the codec encoder, else log-mel",
    )
    p.add_argument("--hubert", help="local directory of a transformers HubertModel for semantic features")
    p.add_argument("--text-encoder", help="local text encoder dir (or 'package') for text_emb conditions")
    p.add_argument("--feature-encoder", metavar="NAME[:KEY=VALUE,...]",
                   help="frozen encoder of audio_feat conditions (needed when a selected task has one): logmel, "
                        "logmel_codec, whisper_hf:model_dir=DIR, whisper_tiny_en, whisper_torch (the same weights "
                        "run by torch), resynth:encoder=whisper_torch,num_codebooks=4 (an encoder on the codec's "
                        "resynthesis), or auto (whisper_tiny_en where installed, else logmel); its features are "
                        "stored in the shards (fp16; docs/features.md)")
    p.add_argument("--format", choices=("shards", "store"), default="shards",
                   help="shards: every example's frames in token shards (SPLIT/TASK-NNNNN.safetensors); store: a "
                        "token store (SPLIT/store.safetensors): each recording's codes once, packed (~26 of 40 bits a "
                        "frame at 4 x 1024 codes), the text token ids and cut metadata beside them; the trainer "
                        "assembles the same examples as it reads (`unisono train --shards OUT`), no codec or audio "
                        "library needed there. Reuses OUT/.codes (copy a shards run's .codes into a new --out to skip "
                        "encoding). Not for audio_feat/text_emb tasks (default: %(default)s; docs/tokens.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def main(args) -> int:
    if args.shard_size < 1 or args.jobs < 1:
        raise UnisonoError("--shard-size and --jobs must be >= 1")
    check_writable(args.out, "dir", "--out")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] or None
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    stats = tokenize_corpus(
        args.data, args.out, functools.partial(load_codec_dir, args.codec), tasks=tasks, splits=splits,
        jobs=args.jobs, shard_size=args.shard_size, rank=args.rank, world_size=args.world_size,
        templates_paths=args.templates or None, fill=args.fill, vocab_path=args.vocab,
        tokenizers_dir=args.tokenizers, num_codebooks=args.num_codebooks, bpe_size=args.bpe_size,
        semantic_units=args.semantic_units, semantic_features=args.semantic_features, hubert_dir=args.hubert,
        text_encoder=args.text_encoder, seed=args.seed, progress=not args.no_progress,
        feature_encoder=args.feature_encoder, store=args.format == "store",
    )
    if args.format == "store":
        print_store_stats(stats)
    else:
        print_stats(stats)
    return 0
