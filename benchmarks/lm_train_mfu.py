"""Training throughput and model FLOPs utilisation (MFU) of the language model.

Builds the model of an LM recipe (default `configs/lm/small.yaml`: delay, d 768, 12 layers, ~100 M
parameters), trains it for `--steps` steps on random frames (batch `--batch` x `--seq` frames of K codes;
AdamW, gradient clipping 1.0, bfloat16 autocast on a GPU, as `unisono train` does) and reports frames/s,
tokens/s (frames x K), achieved TFLOP/s and MFU = achieved / peak. FLOPs per frame follow the usual
dense-transformer count: 6 x (parameters that multiply each frame: every weight but the embedding table)
+ 12 x layers x d_model x seq for attention scores and values (forward + backward, no causal discount).
The peak is looked up from the GPU's name (bf16 dense: H100/H200 989, A100 312 TFLOP/s) or given with
`--peak-tflops`. Data loading is not part of it (the trainer reads token shards in a background thread).

    python benchmarks/lm_train_mfu.py --json OUT.json                     # on a GPU: the ~100 M model
    python benchmarks/lm_train_mfu.py --quick --json OUT.json             # a tiny model on a CPU, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, v in PEAK_BF16_TFLOPS.items():
        if key in name:
            return v
    return None


def flops_per_frame(model, seq: int) -> float:
    """Training FLOPs per frame (forward + backward) of ``model`` at sequence length ``seq``."""
    cfg = model.cfg
    dense = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("tok_emb") and n != "bos")
    attn = 12.0 * cfg.n_layers * cfg.d_model * seq
    if cfg.pattern == "multiscale":  # the local transformer attends over the K codes of a frame
        attn += 12.0 * cfg.local_layers * cfg.local_d_model * cfg.num_streams
    return 6.0 * dense + attn


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/lm/small.yaml", help="LM recipe whose model: section is used")
    p.add_argument("--pattern", help="override the recipe's codebook pattern (delay, multiscale, flat)")
    p.add_argument("--streams", type=int, default=4, help="codebooks K (default 4)")
    p.add_argument("--vocab-size", type=int, default=5200, help="vocabulary size (default 5200: 4 x 1024 codes + text)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=1024, help="frames per sequence")
    p.add_argument("--steps", type=int, default=20, help="timed steps (after --warmup untimed ones)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOP/s of the device (for MFU), if not known")
    p.add_argument("--quick", action="store_true", help="a tiny model, batch 2 x 64 frames, 3 steps (CPU check)")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)

    from unisono.fileio import load_yaml
    from unisono.lm import LMConfig, UnisonoLM

    dev = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if a.device == "auto" else a.device))
    model_cfg = dict(load_yaml(Path(a.config).read_text())["model"]) if not a.quick else \
        dict(pattern="delay", d_model=64, n_layers=2, n_heads=4, local_layers=1, local_d_model=32, local_heads=2)
    if a.pattern:
        model_cfg["pattern"] = a.pattern
    if a.quick:
        a.batch, a.seq, a.steps, a.warmup = 2, 64, 3, 1
    model_cfg.setdefault("max_seq_len", max(4096, a.seq + a.streams + 1))
    cfg = LMConfig(vocab_size=a.vocab_size, num_streams=a.streams, pad_id=0, **model_cfg)
    torch.manual_seed(0)
    model = UnisonoLM.from_config(cfg).to(dev).train()
    fused = dev.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=fused)
    # compile the method itself: .loss of torch.compile(model) would run uncompiled
    loss_fn = torch.compile(model.loss) if a.compile else model.loss
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    g = torch.Generator().manual_seed(0)
    codebook = (a.vocab_size - 4) // a.streams
    frames = (4 + torch.arange(a.streams)[None, None] * codebook
              + torch.randint(0, codebook, (a.batch, a.seq, a.streams), generator=g)).to(dev)
    mask = torch.ones_like(frames, dtype=torch.bool)

    def step():
        with autocast:
            loss = loss_fn(frames, mask)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(a.warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync()
    wall = time.perf_counter() - t0
    fps = a.batch * a.seq * a.steps / wall
    fpf = flops_per_frame(model, a.seq)
    achieved = fpf * fps / 1e12
    peak = peak_tflops(dev, a.peak_tflops)
    res = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "pattern": cfg.pattern, "params": model.num_parameters(), "d_model": cfg.d_model, "n_layers": cfg.n_layers,
        "batch": a.batch, "seq_frames": a.seq, "streams": a.streams, "steps": a.steps, "compile": a.compile,
        "bf16_autocast": dev.type == "cuda", "wall_s": wall, "frames_per_s": fps, "tokens_per_s": fps * a.streams,
        "flops_per_frame": fpf, "achieved_tflops": achieved, "peak_tflops": peak,
        "mfu": achieved / peak if peak else None, "final_loss": float(loss),
        "peak_memory_gib": torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
    }
    mfu = "n/a (peak unknown: --peak-tflops)" if res["mfu"] is None else f"{100 * res['mfu']:.1f} %"
    print(f"{res['device']}: {cfg.pattern}, {res['params'] / 1e6:.1f} M parameters, batch {a.batch} x {a.seq} frames "
          f"x {a.streams} codes; {fps:,.0f} frames/s ({fps * a.streams:,.0f} tokens/s), {achieved:.2f} TFLOP/s, "
          f"MFU {mfu}; {wall:.2f} s for {a.steps} steps; loss {float(loss):.3f}")
    if a.json:
        from unisono.fileio import write_json

        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
