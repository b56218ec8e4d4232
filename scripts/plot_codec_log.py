"""Plot codec training curves from one or more ``log.jsonl`` files (``unisono codec train`` writes one per run).

    python scripts/plot_codec_log.py RUN_A/log.jsonl RUN_B/log.jsonl --labels a b -o curves.png

Four panels against the step: the mel loss, the generator's adversarial loss, the discriminator's mean logits on
real and generated audio (its balance: hinge targets +1 and -1), and steps per second.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_log(path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: {p} does not exist")
    try:
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {p} is not a JSON-lines log ({e})") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", help="log.jsonl files")
    ap.add_argument("--labels", nargs="+", help="one label per log (default: the file names)")
    ap.add_argument("-o", "--output", required=True, help="image file (.png or .svg)")
    args = ap.parse_args(argv)
    labels = args.labels or [Path(p).stem for p in args.logs]
    if len(labels) != len(args.logs):
        raise SystemExit(f"error: {len(args.logs)} logs but {len(labels)} labels")
    runs = [read_log(p) for p in args.logs]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    panels = [
        ("mel", "mel loss"),
        ("adv", "generator adversarial loss"),
        (("d_real", "d_fake"), "discriminator logits"),
        ("steps_per_s", "steps / s"),
    ]
    for ax, (key, title) in zip(axes, panels):
        for i, (rows, label) in enumerate(zip(runs, labels)):
            steps = [r["step"] for r in rows]
            for k, style in zip(key if isinstance(key, tuple) else (key,), ("-", "--")):
                if any(k in r for r in rows):
                    suffix = f" {k[2:]}" if isinstance(key, tuple) else ""
                    ax.plot(steps, [r.get(k, float("nan")) for r in rows], style, color=f"C{i}", label=label + suffix)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.output, dpi=90)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
