"""The table of issue 21's comparison (benchmarks/feature_input.sh): per arm, the test-split scores of asr, caption
and audio_qa, the validation loss per task at the last step and the training speed (seconds per step, frames per
second over the run, from the run's throughput.json).

    python benchmarks/feature_input_table.py [--out runs/feat21] [--json runs/feat21/table.json]

Prints a markdown table; arms without a finished evaluation are left out (with a note).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ARMS = ("codes", "logmel", "whisper", "resynth")
TASKS = {"asr": ("asr", "asr_feat"), "caption": ("caption", "caption_feat"), "audio_qa": ("audio_qa", "audio_qa_feat")}


def _mean(metrics: dict, task: str, system: str, name: str):
    v = metrics["tasks"].get(task, {}).get("systems", {}).get(system, {}).get(name)
    return None if v is None else float(v["mean"])


def arm_row(out: Path, arm: str) -> dict | None:
    ev, run = out / f"eval_{arm}" / "metrics.json", out / f"run_{arm}"
    if not ev.is_file():
        return None
    m = json.loads(ev.read_text())
    row: dict = {"arm": arm}
    for key, names in TASKS.items():
        task = next((t for t in names if t in m["tasks"]), None)
        if task is None:
            continue
        for system in ("model", "reference", "train_prior"):
            for metric in ("wer", "cer", "bleu", "text_sim", "qa_acc"):
                v = _mean(m, task, system, metric)
                if v is not None:
                    row[f"{key}.{system}.{metric}"] = v
        row[f"{key}.n_items"] = m["tasks"][task]["n_items"]
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    last_val = next((r for r in reversed(log) if any(k.startswith("val_loss/") for k in r)), {})
    for key, names in TASKS.items():
        for t in names:
            if f"val_loss/{t}" in last_val:
                row[f"{key}.val_loss"] = last_val[f"val_loss/{t}"]
    tp = json.loads((run / "throughput.json").read_text())["all"]
    row.update(steps=tp["steps"], s_per_step=tp["seconds"] / max(1, tp["steps"]), frames_per_s=tp["frames_per_s"])
    return row


def fmt(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/feat21", help="the OUT of benchmarks/feature_input.sh")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    rows = [r for r in (arm_row(Path(args.out), a) for a in ARMS) if r is not None]
    missing = [a for a in ARMS if a not in {r["arm"] for r in rows}]
    print("| input | ASR WER (CER) | caption BLEU / text_sim | QA acc | val loss asr / caption / qa | s per step | "
          "frames/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        g = r.get
        print(f"| {r['arm']} | {fmt(g('asr.model.wer'))} ({fmt(g('asr.model.cer'))}) | "
              f"{fmt(g('caption.model.bleu'))} / {fmt(g('caption.model.text_sim'))} | "
              f"{fmt(g('audio_qa.model.qa_acc'))} | {fmt(g('asr.val_loss'), '.2f')} / "
              f"{fmt(g('caption.val_loss'), '.2f')} / {fmt(g('audio_qa.val_loss'), '.2f')} | "
              f"{fmt(g('s_per_step'), '.2f')} | {fmt(g('frames_per_s'), '.0f')} |")
    if rows:
        r = rows[0]
        print(f"\nreference (Whisper on the test audio): WER {fmt(r.get('asr.reference.wer'))}; train prior: caption "
              f"{fmt(r.get('caption.train_prior.bleu'))} / {fmt(r.get('caption.train_prior.text_sim'))}, QA "
              f"{fmt(r.get('audio_qa.train_prior.qa_acc'))}")
    if missing:
        print(f"\nnot evaluated yet: {', '.join(missing)} (bash benchmarks/feature_input.sh {' '.join(missing)})",
              file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
