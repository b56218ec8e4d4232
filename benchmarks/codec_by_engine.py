"""Codecs side by side per speech engine (and on music and sounds): mel distance, PESQ-WB and STOI at one codebook
count, one table, one JSON.

    python benchmarks/codec_by_engine.py --codec shipped=unisono/assets/unisono-small/codec --codec ft=runs/codec_ft \\
        --data runs/mix/corpus --num-codebooks 4 --limit 40 --json runs/codec_by_engine.json

Each cell is ``benchmarks/codec_quality.py`` on the test split's cuts of that group (speech of one engine:
``--kind speech --engine E``; music; sound), the first ``--limit`` of them, so every codec is scored on the same
items. A group with no cuts in the split is left out with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import codec_quality  # noqa: E402

ENGINES = ("espeak", "kokoro", "piper", "festival", "flite")
KINDS = ("music", "sound")


def score(codec: str, data: str, split: str, group: str, k: int, limit: int, threads: int) -> dict | None:
    """The ``k``-codebook row of codec_quality for one group (an engine's speech, or a cut kind); None if empty."""
    kind, engine = (group, None) if group in KINDS else ("speech", group)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "q.json"
        argv = ["--codec", codec, "--data", data, "--split", split, "--kind", kind, "--num-codebooks", str(k),
                "--limit", str(limit), "--threads", str(threads), "--no-unquantized", "--json", str(out)]
        if engine:
            argv += ["--engine", engine]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = codec_quality.main(argv)
        if code != 0 or not out.exists():
            return None
        return next(r for r in json.loads(out.read_text())["rows"] if r["num_codebooks"] == k)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codec", action="append", required=True, metavar="NAME=DIR", help="a codec to score (repeatable)")
    ap.add_argument("--data", required=True, help="a corpus made by unisono synth")
    ap.add_argument("--split", default="test")
    ap.add_argument("--groups", default=",".join(ENGINES + KINDS),
                    help=f"comma-separated engines and kinds (default: {','.join(ENGINES + KINDS)})")
    ap.add_argument("--num-codebooks", type=int, default=4)
    ap.add_argument("--limit", type=int, default=40, help="at most this many cuts per group (0 = all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    codecs = {}
    for spec in args.codec:
        name, sep, path = spec.partition("=")
        if not sep or not (Path(path) / "config.json").is_file():
            ap.error(f"--codec {spec}: give NAME=DIR with a codec directory (config.json)")
        have = json.loads((Path(path) / "config.json").read_text()).get("num_codebooks")
        if have is not None and args.num_codebooks > have:
            ap.error(f"--num-codebooks {args.num_codebooks}: codec {name} has {have} codebooks")
        codecs[name] = path
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    bad = [g for g in groups if g not in ENGINES + KINDS]
    if bad:
        ap.error(f"--groups: unknown {bad}; choose from {', '.join(ENGINES + KINDS)}")
    os.environ.setdefault("TQDM_DISABLE", "1")
    results: dict[str, dict] = {}
    for group in groups:
        for name, path in codecs.items():
            row = score(path, args.data, args.split, group, args.num_codebooks, args.limit, args.threads)
            if row is None:
                print(f"{group}: no cuts in split {args.split}; left out", file=sys.stderr)
                break
            results.setdefault(group, {})[name] = row
            print(f"{group} {name}: {row['items']} cuts, mel {row['mel_distance']:.3f}, PESQ-WB {row['pesq_wb']:.2f}, "
                  f"STOI {row['stoi']:.3f}", file=sys.stderr, flush=True)
    names = list(codecs)
    print(f"{args.num_codebooks} codebooks, {args.data} split {args.split}; cells: mel distance / PESQ-WB / STOI")
    print("| group | cuts | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for group, per in results.items():
        cells = [f"{per[n]['mel_distance']:.3f} / {per[n]['pesq_wb']:.2f} / {per[n]['stoi']:.3f}" for n in names]
        print(f"| {group} | {per[names[0]]['items']} | " + " | ".join(cells) + " |")
    if args.json:
        from unisono.fileio import write_json

        write_json(args.json, {"codecs": codecs, "data": args.data, "split": args.split,
                               "num_codebooks": args.num_codebooks, "limit": args.limit, "groups": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
