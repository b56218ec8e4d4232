"""What weight-only int8 costs a trained language model: validation loss per task, float32 against int8.

Loads a checkpoint (default: the shipped model), reads up to ``--per-task`` validation examples of each
task from the token shards it was trained on, and computes the cross-entropy of their target tokens with
the float32 weights and with the same weights quantized by ``unisono.lm.quant.int8_inference``. Also times
generation of ``--frames`` frames at batch 1 both ways. Prints a table, writes JSON.

    python benchmarks/int8_quality.py --shards runs/ref/shards --json /tmp/int8_quality.json
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def task_losses(lm, examples: dict[str, list[dict]], pad_id: int) -> dict[str, float]:
    """Mean target-token cross-entropy (nats) per task."""
    from unisono.train.data import collate

    out = {}
    with torch.no_grad():
        for task, exs in examples.items():
            s = n = 0.0
            for ex in exs:
                mb = collate([ex], pad_id)
                r = lm.loss(mb["frames"], mb["loss_mask"])
                s += float(r["stream_sum"].sum())
                n += float(r["stream_count"].sum())
            out[task] = s / max(n, 1.0)
    return out


def gen_ms_per_frame(lm, frames: int, prompt: torch.Tensor) -> float:
    lm.generate(prompt, 2, top_k=50, seed=0)
    t0 = time.perf_counter()
    lm.generate(prompt, frames, top_k=50, seed=0)
    return 1000 * (time.perf_counter() - t0) / frames


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped model)")
    p.add_argument("--shards", required=True, help="token shards with a valid/ split (e.g. runs/ref/shards)")
    p.add_argument("--per-task", type=int, default=20, help="validation examples per task (default 20)")
    p.add_argument("--frames", type=int, default=100, help="frames generated for the speed figure (default 100)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from unisono.data.shards import ShardReader
    from unisono.generate import DEFAULT_CHECKPOINT
    from unisono.lm import UnisonoLM
    from unisono.lm.quant import int8_inference

    ckpt = Path(a.checkpoint) if a.checkpoint else DEFAULT_CHECKPOINT
    lm = UnisonoLM.from_pretrained(ckpt).float().eval()
    lm8 = int8_inference(copy.deepcopy(lm))
    examples: dict[str, list[dict]] = {}
    for ex in ShardReader(a.shards, split="valid"):
        lst = examples.setdefault(ex["task"], [])
        if len(lst) < a.per_task:
            lst.append(ex)
    t0 = time.perf_counter()
    f32, i8 = task_losses(lm, examples, lm.cfg.pad_id), task_losses(lm8, examples, lm.cfg.pad_id)
    prompt = next(iter(examples.values()))[0]["frames"][None, :50]
    speed = {"float32": gen_ms_per_frame(lm, a.frames, prompt), "int8": gen_ms_per_frame(lm8, a.frames, prompt)}
    res = {"checkpoint": str(ckpt), "threads": a.threads, "per_task": a.per_task,
           "examples": {t: len(v) for t, v in examples.items()}, "val_loss_float32": f32, "val_loss_int8": i8,
           "gen_ms_per_frame_b1": speed, "int8_speed_ratio_b1": speed["float32"] / speed["int8"],
           "wall_s": time.perf_counter() - t0}
    rel = [(i8[t] - f32[t]) / f32[t] for t in f32]
    res["max_rel_loss_change"] = max(rel, key=abs)
    res["mean_rel_loss_change"] = sum(rel) / len(rel)
    print(f"{'task':<26}{'n':>4}{'float32':>10}{'int8':>10}{'change':>9}")
    for t in sorted(f32):
        print(f"{t:<26}{len(examples[t]):>4}{f32[t]:>10.4f}{i8[t]:>10.4f}{100 * (i8[t] - f32[t]) / f32[t]:>8.2f}%")
    print(f"mean change {100 * res['mean_rel_loss_change']:+.2f}%, largest {100 * res['max_rel_loss_change']:+.2f}%; "
          f"generation at batch 1: {speed['float32']:.2f} ms/frame float32, {speed['int8']:.2f} ms/frame int8 "
          f"({res['int8_speed_ratio_b1']:.2f} x), {a.threads} thread(s)")
    if a.json:
        from unisono.fileio import write_json

        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
