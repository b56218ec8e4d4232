"""``unisono codec``: train a codec, encode audio to codes, decode codes to audio, evaluate resynthesis."""

from __future__ import annotations

import argparse
from pathlib import Path

from unisono.audio import AUDIO_EXTENSIONS
from unisono.errors import UnisonoError
from unisono.fileio import check_writable
from unisono.train.settings import parse_sets

DESCRIPTION = """Neural audio codec commands.

  unisono codec train --config configs/codec/tiny.yaml --data CORPUS_OR_MANIFEST_OR_FOLDER --out DIR
  unisono codec train --config configs/codec/h200_decoder.yaml --init CODEC_DIR --data PACK --out DIR --device cuda
  unisono codec pack --data CORPUS --out PACK --max-mib 40
  unisono codec encode IN.wav --codec DIR -o CODES.npy [--num-codebooks K]
  unisono codec decode CODES.npy --codec DIR -o OUT.wav
  unisono codec eval --codec DIR --data CORPUS [--split test] [--num-codebooks 1 2 4 8]
  unisono codec enhancer-pairs --midi CORPUS --out PAIRS --max-mib 48
  unisono codec train-enhancer --config configs/codec/enhancer_tiny.yaml --pairs PAIRS --out DIR [--max-seconds S]

--codec DIR may hold a codec made by 'unisono codec train' or a Hugging Face Encodec/DAC/Mimi/Xcodec
model saved on disk (nothing is downloaded).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="{train,pack,encode,decode,eval,enhancer-pairs,train-enhancer}",
                                required=True)

    t = sub.add_parser("train", help="train or resume a codec", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument(
        "--config",
        help="YAML recipe (sections model/train/loss/discriminator); see unisono/configs/codec/ "
        "(configs/codec/ in a checkout)",
    )
    t.add_argument("--data", required=True, action="append",
                   help="corpus dir, Lhotse cuts .jsonl(.gz), Lhotse Shar folder, or a folder of wav/flac files; "
                        "repeatable (their audio together)")
    t.add_argument("--out", required=True, help="output dir; running again with the same dir resumes")
    t.add_argument("--init", metavar="CODEC_DIR",
                   help="start a new run from this trained codec's weights and config (the recipe's model section "
                        "and --set may change what a resume may change); when --out holds a run, it resumes with its "
                        "own config and --init is not needed")
    t.add_argument("--steps", type=int, help="train until this step (overrides train.steps)")
    t.add_argument("--max-seconds", type=float,
                   help="stop after this many seconds of training, saved and resumable (overrides train.max_seconds)")
    t.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (YAML syntax), e.g. --set train.batch_size=4")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    k = sub.add_parser(
        "pack",
        help="a size-capped folder of FLAC files from a data source (training audio that travels)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    k.add_argument("--data", required=True, action="append",
                   help="corpus dir, Lhotse cuts .jsonl(.gz), Lhotse Shar folder, or a folder of wav/flac files; "
                        "repeatable")
    k.add_argument("--out", required=True, help="new folder for the FLAC files (usable as 'codec train --data')")
    k.add_argument("--max-mib", type=float, default=40.0, help="size budget of the folder in MiB")
    k.add_argument("--split", default="train", help="split of a corpus dir")
    k.add_argument("--sample-rate", type=int, default=16000, help="sample rate of the files in Hz")
    k.add_argument("--seed", type=int, default=0, help="seed of the random choice of items")

    e = sub.add_parser("encode", help="audio file -> codes .npy [K, T]")
    e.add_argument("input", help="audio file (wav/flac/ogg); resampled to the codec's rate, mixed to mono")
    e.add_argument("--codec", required=True, help="codec directory")
    e.add_argument("-o", "--output", required=True, help="output .npy file (int64 codes [K, T])")
    e.add_argument("--num-codebooks", type=int, help="use only the first K codebooks")

    d = sub.add_parser("decode", help="codes .npy [K, T] -> audio file")
    d.add_argument("input", help=".npy codes [K, T] (or [1, K, T])")
    d.add_argument("--codec", required=True, help="codec directory")
    d.add_argument("-o", "--output", required=True, help="output audio file (.wav/.flac)")

    v = sub.add_parser("eval", help="resynthesis quality (mel distance, SI-SDR, PESQ-WB, STOI) on a data split")
    v.add_argument("--codec", required=True, help="codec directory")
    v.add_argument("--data", required=True, help="corpus dir, cuts manifest or audio folder")
    v.add_argument("--split", default="test", help="split of a corpus dir")
    v.add_argument("--num-codebooks", type=int, nargs="+", help="codebook counts to evaluate (default 1 2 4 8 up to K)")
    v.add_argument("--limit", type=int, default=0, help="evaluate at most this many utterances (0 = all)")
    v.add_argument("--json", help="write the results to this JSON file")
    add_enhancer_arguments(sub)


def add_enhancer_arguments(sub) -> None:
    """``enhancer-pairs`` and ``train-enhancer``: the enhancement stage after the codec (docs/codec.md)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("enhancer-pairs", formatter_class=fmt,
                       help="(16 kHz codec codes, 48 kHz stereo reference) pairs of music and sounds, packed to "
                       "travel")
    p.add_argument("--midi", required=True,
                   help="a corpus dir (its midi/train and midi/test), its midi/ folder, or a folder of .mid files")
    p.add_argument("--out", required=True, help="new folder for the pair pack")
    p.add_argument("--codec", help="codec directory (default: the shipped model's)")
    p.add_argument("--max-mib", type=float, default=48.0, help="size budget of the pack in MiB (both splits)")
    p.add_argument("--test-mib", type=float, default=6.0, help="of which the held-out test split")
    p.add_argument("--sound-share", type=float, default=0.4, help="share of the seconds that are sound scenes")
    p.add_argument("--seed", type=int, default=0, help="seed of the order, placement and scenes")
    t = sub.add_parser("train-enhancer", formatter_class=fmt,
                       help="train or resume the enhancement stage (16 kHz mono -> 48 kHz stereo) on a pair pack")
    t.add_argument("--config", help="YAML recipe (model/train/loss/discriminator); see "
                                    "unisono/configs/codec/enhancer_tiny.yaml and h200_enhancer.yaml")
    t.add_argument("--pairs", required=True, help="a pair pack made by 'unisono codec enhancer-pairs'")
    t.add_argument("--out", required=True, help="output dir (the enhancer in OUT/enhancer); the same dir resumes")
    t.add_argument("--codec", help="the frozen codec that decodes the pairs (default: the shipped model's)")
    t.add_argument("--steps", type=int, help="train until this step (overrides train.steps)")
    t.add_argument("--max-seconds", type=float,
                   help="stop after this many seconds of training, saved and resumable (overrides train.max_seconds)")
    t.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    t.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (YAML syntax), e.g. --set train.batch_size=4")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def _enhancer_main(args) -> int:
    from unisono import checkpoint as C

    codec = args.codec or C.codec_dir(C.DEFAULT_CHECKPOINT)
    if args.action == "enhancer-pairs":
        from unisono.codec.enhance_data import build_pairs

        meta = build_pairs(args.midi, args.out, codec, args.max_mib, args.test_mib, args.sound_share, args.seed)
        for split, m in meta["splits"].items():
            print(f"{args.out} {split}: {len(m['items'])} pairs, {m['music_seconds'] / 60:.1f} min music + "
                  f"{m['sound_seconds'] / 60:.1f} min sounds, {m['bytes'] / 2**20:.1f} MiB "
                  f"({m['bytes_per_minute'] / 2**20:.2f} MiB per minute)")
        return 0
    from unisono.codec.enhance_train import train_enhancer

    overrides = parse_sets(args.set)
    if args.max_seconds is not None:
        overrides.setdefault("train", {})["max_seconds"] = args.max_seconds
    tr = train_enhancer(args.config, args.pairs, args.out, codec, overrides, args.device, args.steps,
                        progress=not args.no_progress)
    print(f"enhancer saved to {Path(args.out) / 'enhancer'} (step {tr.step}); use it with --enhance "
          f"{Path(args.out) / 'enhancer'} or copy it into a checkpoint as CHECKPOINT/enhancer")
    return 0


def check_outputs(args) -> None:
    """The output of ``args.action`` checked before any work: writable, and of a kind the action writes."""
    if args.action in ("train", "pack", "enhancer-pairs", "train-enhancer"):
        check_writable(args.out, "dir", "--out")
    if args.action == "enhancer-pairs" and Path(args.out).exists():
        raise UnisonoError(f"--out {args.out} exists; build pairs into a new folder")
    if args.action == "train-enhancer" and not (Path(args.pairs) / "pairs.json").is_file():
        raise UnisonoError(f"--pairs {args.pairs} is not a pair pack (no pairs.json); make one with "
                           "'unisono codec enhancer-pairs'")
    elif args.action == "encode":
        if not str(args.output).endswith(".npy"):
            raise UnisonoError(f"-o {args.output}: the codes file must end with .npy")
        check_writable(args.output, flag="-o")
    elif args.action == "decode":
        if Path(args.output).suffix.lower() not in AUDIO_EXTENSIONS:
            raise UnisonoError(f"-o {args.output}: the audio file must end with one of {', '.join(AUDIO_EXTENSIONS)}")
        check_writable(args.output, flag="-o")
    elif args.action == "eval" and args.json:
        check_writable(args.json, flag="--json")


def main(args) -> int:
    import torch

    check_outputs(args)
    if args.action in ("enhancer-pairs", "train-enhancer"):
        return _enhancer_main(args)
    if args.action == "train":
        from unisono.codec.trainer import train

        overrides = parse_sets(args.set)
        if args.max_seconds is not None:
            overrides.setdefault("train", {})["max_seconds"] = args.max_seconds
        tr = train(args.config, args.data, args.out, overrides, args.device, args.steps,
                   progress=not args.no_progress, init=args.init)
        print(f"codec saved to {args.out} (step {tr.step})")
        return 0
    if args.action == "pack":
        from unisono.codec.data import list_audio, pack_audio

        stats = pack_audio(list_audio(args.data, args.split), args.out, int(args.max_mib * 2**20), args.sample_rate,
                           seed=args.seed)
        print(f"{args.out}: {stats['files']} files, {stats['seconds'] / 60:.1f} min of audio, "
              f"{stats['bytes'] / 2**20:.1f} MiB ({stats['bytes_per_hour'] / 2**20:.1f} MiB per hour)")
        return 0

    from unisono.codec import load_codec

    codec = load_codec(args.codec).eval()
    if args.action == "encode":
        import numpy as np

        from unisono.audio import load
        from unisono.fileio import atomic_path

        wav, _ = load(args.input, sample_rate=codec.sample_rate, mono=True)
        codes = (
            codec.encode(wav[None], num_codebooks=args.num_codebooks) if args.num_codebooks else codec.encode(wav[None])
        )
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, codes[0].cpu().numpy().astype(np.int64))
        print(f"{args.output}: codes [{codes.shape[1]}, {codes.shape[2]}] at {codec.frame_rate:g} Hz")
        return 0
    if args.action == "decode":
        import numpy as np

        from unisono.audio import save

        p = Path(args.input)
        if not p.is_file():
            raise UnisonoError(f"{p} does not exist")
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise UnisonoError(f"cannot read {p} as a .npy array ({e})") from None
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise UnisonoError(f"{p} must hold integer codes [K, T]; got {arr.dtype} {arr.shape}")
        wav = codec.decode(torch.from_numpy(arr.astype(np.int64))[None])
        save(args.output, wav[0], codec.sample_rate)
        print(f"{args.output}: {wav.shape[-1] / codec.sample_rate:.2f} s at {codec.sample_rate} Hz")
        return 0
    if args.action == "eval":
        from unisono.codec.evaluate import evaluate, format_table

        ks = args.num_codebooks or [k for k in (1, 2, 4, 8) if k <= codec.num_codebooks]
        res = evaluate(codec, args.data, args.split, ks, args.limit)
        print(format_table(res))
        if args.json:
            from unisono.fileio import write_json

            write_json(args.json, res)
        return 0
    raise UnisonoError(f"unknown codec action {args.action}")
