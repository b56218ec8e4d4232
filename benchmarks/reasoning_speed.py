"""Cost of one-pass plan-then-audio generation: ``generate(phases=...)`` vs plain audio generation.

    PYTHONPATH=. python benchmarks/reasoning_speed.py --frames 230 --plan 30 --repeats 5 --json reasoning_speed.json

A random tiny-recipe model (d 128, 4 layers, 4 codebooks x 256), batch 4, top-k 30, seeded. Both runs make
the same number of frames (``min_new_frames`` holds the end back): plain = ``frames`` audio frames with the
codec mask; phased = a plan of at most ``plan`` BPE tokens, its end and start frames, then audio. Runs
alternate; the best of ``repeats`` is kept. Compare the ratio within one run.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=230)
    ap.add_argument("--plan", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--patterns", default="delay,multiscale,flat")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from unisono.inference import target_phases
    from unisono.lm import LMConfig, UnisonoLM
    from unisono.tasks import load_templates
    from unisono.vocab import Vocab

    tpls = load_templates()
    tpl = tpls["text_to_sound_reasoning"]
    v = Vocab.build(tpls, num_codebooks=4, codebook_size=256, bpe=300)
    prompt = torch.stack([v.token_frame(v.special_id("<start>"))] * 10)[None].repeat(4, 1, 1)
    prompt[:, -1] = v.token_frame(v.start_id("bpe"))
    results = {}
    print("| pattern | plain s | phased s | phased / plain |")
    print("|---|---|---|---|")
    for pattern in args.patterns.split(","):
        torch.manual_seed(0)
        lm = UnisonoLM.from_config(LMConfig(vocab_size=v.size, num_streams=4, pad_id=v.pad_id, pattern=pattern,
                                            d_model=128, n_layers=4, n_heads=4, local_layers=2, local_d_model=64,
                                            local_heads=4, max_seq_len=4 * (args.frames + 20))).eval()
        runs = {
            "plain": lambda lm=lm: lm.generate(
                prompt,
                args.frames,
                stream_mask=v.generation_mask("codec"),
                end_id=v.end_id("codec"),
                top_k=30,
                seed=[0, 1, 2, 3],
                min_new_frames=args.frames,
            ),
            "phased": lambda lm=lm: lm.generate(
                prompt,
                args.frames,
                phases=target_phases(v, tpl, plan_max_tokens=args.plan),
                top_k=30,
                seed=[0, 1, 2, 3],
                min_new_frames=args.frames,
            ),
        }
        best = {k: float("inf") for k in runs}
        for _ in range(args.repeats):
            for k, fn in runs.items():
                t0 = time.perf_counter()
                out = fn()
                best[k] = min(best[k], time.perf_counter() - t0)
                assert out.shape[1] == args.frames
        results[pattern] = {**best, "ratio": best["phased"] / best["plain"]}
        print(f"| {pattern} | {best['plain']:.3f} | {best['phased']:.3f} | {best['phased'] / best['plain']:.3f} |")
    if args.json:
        from unisono.fileio import write_json

        write_json(args.json, {"frames": args.frames, "plan_max_tokens": args.plan, "batch": 4, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
