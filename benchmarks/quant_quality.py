"""What weight-only quantization costs a trained language model: validation loss per task, float32
against int8 and int4.

Loads a checkpoint (default: the shipped model), reads up to ``--per-task`` validation examples of each
task from the token shards it was trained on, and computes the cross-entropy of their target tokens with
the float32 weights and with the same weights quantized by ``unisono.lm.quant.quantize_inference`` (8 bits;
4 bits for the transformer's linear layers). Also times generation of ``--frames`` frames at batch 1 each
way (best of `--rounds` interleaved rounds). Prints a table, writes JSON.

    python benchmarks/quant_quality.py --shards runs/ref/shards --json /tmp/quant_quality.json
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
    p.add_argument("--rounds", type=int, default=3, help="speed: best of this many rounds (default 3)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from unisono.checkpoint import DEFAULT_CHECKPOINT
    from unisono.data.shards import ShardReader
    from unisono.lm import UnisonoLM
    from unisono.lm.quant import quantize_inference

    ckpt = Path(a.checkpoint) if a.checkpoint else DEFAULT_CHECKPOINT
    lm = UnisonoLM.from_pretrained(ckpt).float().eval()
    models = {"float32": lm, "int8": quantize_inference(copy.deepcopy(lm), 8),
              "int4": quantize_inference(copy.deepcopy(lm), 4)}
    examples: dict[str, list[dict]] = {}
    for ex in ShardReader(a.shards, split="valid"):
        lst = examples.setdefault(ex["task"], [])
        if len(lst) < a.per_task:
            lst.append(ex)
    t0 = time.perf_counter()
    loss = {name: task_losses(m, examples, lm.cfg.pad_id) for name, m in models.items()}
    prompt = next(iter(examples.values()))[0]["frames"][None, :50]
    speed = {name: float("inf") for name in models}
    for _ in range(a.rounds):  # rounds interleave the models, so that a change of load hits all alike
        for name, m in models.items():
            speed[name] = min(speed[name], gen_ms_per_frame(m, a.frames, prompt))
    res = {"checkpoint": str(ckpt), "threads": a.threads, "per_task": a.per_task, "rounds": a.rounds,
           "examples": {t: len(v) for t, v in examples.items()},
           **{f"val_loss_{name}": v for name, v in loss.items()},
           "gen_ms_per_frame_b1": speed, "wall_s": None}
    f32 = loss["float32"]
    for name in ("int8", "int4"):
        rel = [(loss[name][t] - f32[t]) / f32[t] for t in f32]
        res[f"{name}_speed_ratio_b1"] = speed["float32"] / speed[name]
        res[f"{name}_max_rel_loss_change"] = max(rel, key=abs)
        res[f"{name}_mean_rel_loss_change"] = sum(rel) / len(rel)
    res["wall_s"] = time.perf_counter() - t0
    print(f"{'task':<26}{'n':>4}{'float32':>10}{'int8':>10}{'change':>9}{'int4':>10}{'change':>9}")
    for t in sorted(f32):
        line = f"{t:<26}{len(examples[t]):>4}{f32[t]:>10.4f}"
        for name in ("int8", "int4"):
            line += f"{loss[name][t]:>10.4f}{100 * (loss[name][t] - f32[t]) / f32[t]:>8.2f}%"
        print(line)
    for name in ("int8", "int4"):
        print(f"{name}: mean change {100 * res[name + '_mean_rel_loss_change']:+.2f}%, largest "
              f"{100 * res[name + '_max_rel_loss_change']:+.2f}%; generation at batch 1 {speed[name]:.2f} ms/frame "
              f"against {speed['float32']:.2f} float32 ({res[name + '_speed_ratio_b1']:.2f} x), {a.threads} thread(s)")
    if a.json:
        from unisono.fileio import write_json

        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
