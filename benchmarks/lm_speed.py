"""Speed of the language model's codebook patterns, and of a transformers MusicGen decoder as the peer.

For `multiscale`, `delay` and `flat` at (about) equal parameter count, on the same run and machine:
training frames/s (forward + backward + AdamW step) and generation real-time factor at batch 1 and 8
(rtf = seconds of audio produced per second, all rows together, 50 frames = 1 s), plus a
randomly initialised `MusicgenForCausalLM` of the same size generating the same number of frames.
Ratios (`*_ratio_*`) compare patterns with the peer within this one run. Every figure is given twice:
from wall time (`gen_rtf_*`) and from this process's CPU time (`gen_rtf_cpu_*`), which is less
disturbed when other processes share the cores; each is the best of `--rounds` rounds.
Rows `delay_int8` / `multiscale_int8` run the same models with weight-only int8 linear layers
(`unisono.lm.quant`, inference only), `delay_int4` / `multiscale_int4` with the transformer's linear
layers in 4 bits (groups of 32, heads int8), `musicgen_int8` the peer with PyTorch's dynamic int8
quantization; `*_int8_vs_musicgen_int8_*` and `*_int4_vs_musicgen_int8_*` compare with the quantized
peer (`--no-quant` skips these rows).

    python benchmarks/lm_speed.py --quick --json OUT.json     # about a minute on one CPU core
    python benchmarks/lm_speed.py --json OUT.json              # ~20M parameters, 5 s of audio

With `--checkpoint DIR` it times a trained model instead (DIR holds config.json, model.safetensors and vocab.json,
e.g. a checkpoint of `unisono train`) on `--device` at `--batches` (default 1 and 16), beside a MusicGen decoder of
its transformer's sizes (random weights, built from a config: nothing is downloaded): frames/s with the model's
KV-cached `generate` (caches preallocated once per call) against transformers' `generate` (scripts/h200_lm.sh
runs it on the GPU). Rows never end (no end id), so every row makes `--seconds` of frames.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from unisono.lm import LMConfig, UnisonoLM  # noqa: E402

FRAME_RATE = 50.0  # Hz


def build_models(d: int, layers: int, heads: int, k: int, codebook: int) -> dict:
    specials = 4
    v = specials + k * codebook
    base = dict(vocab_size=v, num_streams=k, pad_id=0, d_model=d, n_heads=heads, max_seq_len=8192)
    models = {
        "delay": UnisonoLM.from_config(LMConfig(pattern="delay", n_layers=layers, **base)),
        "flat": UnisonoLM.from_config(LMConfig(pattern="flat", n_layers=layers, **base)),
        # the local transformer's layers count against the global ones (equal parameter count)
        "multiscale": UnisonoLM.from_config(
            LMConfig(
                pattern="multiscale", n_layers=layers - 2, local_layers=2, local_d_model=d, local_heads=heads, **base
            )
        ),
    }
    return models


QUANT = ("int8", "int4")


def add_quantized(models: dict) -> dict:
    """``delay_int8`` / ``multiscale_int8`` / ``delay_int4`` / ``multiscale_int4``: copies with weight-only
    int8 or int4 linear layers (unisono.lm.quant)."""
    import copy

    from unisono.lm.quant import quantize_inference

    for q in QUANT:
        for name in ("delay", "multiscale"):
            models[f"{name}_{q}"] = quantize_inference(copy.deepcopy(models[name]).eval(), int(q[3:]))
    return models


def musicgen_int8(mg):
    """The peer with PyTorch's dynamic int8 quantization of its linear layers (int8 weights and activations,
    fbgemm), the usual way to run a transformers model in int8 on a CPU (deprecated in torch, hence quiet)."""
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(mg), {torch.nn.Linear}, dtype=torch.qint8)


def build_musicgen(d: int, layers: int, heads: int, k: int, codebook: int):
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    cfg = MusicgenDecoderConfig(vocab_size=codebook, num_hidden_layers=layers, hidden_size=d, num_attention_heads=heads,
                                ffn_dim=4 * d, num_codebooks=k, pad_token_id=codebook, bos_token_id=codebook,
                                max_position_embeddings=2048, dropout=0.0)
    return MusicgenForCausalLM(cfg).eval()


def codes(b: int, t: int, k: int, codebook: int, g: torch.Generator) -> torch.Tensor:
    return 4 + torch.arange(k)[None, None, :] * codebook + torch.randint(0, codebook, (b, t, k), generator=g)


def train_fps(model, b: int, t: int, k: int, codebook: int, steps: int) -> float:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    frames = codes(b, t, k, codebook, g)
    mask = torch.ones_like(frames, dtype=torch.bool)

    def step():
        out = model.loss(frames, mask)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return b * t * steps / (time.perf_counter() - t0)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device="cpu"):
    _sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    _sync(device)  # a GPU's work is done when the clock stops
    return out, time.perf_counter() - t0, time.process_time() - c0


def gen_time(model, b: int, prompt_len: int, n: int, k: int, codebook: int, mask: torch.Tensor) -> tuple[float, float]:
    """(wall s, CPU s) to generate ``n`` frames for ``b`` rows."""
    g = torch.Generator().manual_seed(1)
    prompt = codes(b, prompt_len, k, codebook, g)
    model.generate(prompt, 2, stream_mask=mask, top_k=250, seed=0)  # warm-up
    out, wall, cpu = _timed(lambda: model.generate(prompt, n, stream_mask=mask, top_k=250, seed=0))
    assert out.shape == (b, n, k)
    return wall, cpu


def musicgen_gen_time(mg, b: int, prompt_len: int, n: int, k: int, codebook: int,
                      device: str = "cpu") -> tuple[float, float, int]:
    from transformers import GenerationConfig

    ids = torch.randint(0, codebook, (b * k, prompt_len), generator=torch.Generator().manual_seed(1)).to(device)

    def run(steps):
        gc = GenerationConfig(max_new_tokens=steps, do_sample=True, top_k=250, pad_token_id=codebook,
                              bos_token_id=codebook, decoder_start_token_id=codebook, num_return_sequences=1)
        with torch.inference_mode():
            return mg.generate(input_ids=ids, generation_config=gc)

    run(k + 1)  # warm-up (the delay pattern needs at least K steps)
    out, wall, cpu = _timed(lambda: run(n + k - 1), device)  # K - 1 extra steps give n complete frames
    return wall, cpu, out.shape[-1] - prompt_len


def checkpoint_rows(path: str, device: str, batches: list[int], seconds: float, rounds: int) -> dict:
    """Generation speed of the trained model in ``path`` on ``device`` beside a MusicGen decoder of its sizes (see the
    module doc): per batch size, frames/s of all rows together and ms per frame, the best of ``rounds``."""
    from unisono.vocab import Vocab

    dev = torch.device(device)
    model = UnisonoLM.from_pretrained(path, map_location=dev).eval()
    cfg, vocab = model.cfg, Vocab.load(Path(path) / "vocab.json")
    k, v = cfg.num_streams, cfg.vocab_size
    ranges = [vocab.modality_range("codec", j) for j in range(k)]
    mask = torch.zeros(k, v, dtype=torch.bool)
    for j, r in enumerate(ranges):
        mask[j, r.start:r.stop] = True
    mask = mask.to(dev)
    n, prompt_len, cb = int(round(seconds * FRAME_RATE)), 10, ranges[0].size
    res: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "frames_generated": n,
                 "frame_rate_hz": FRAME_RATE, "dtype": "float32", "params_unisono": model.num_parameters(),
                 "pattern": cfg.pattern, "top_k": 250}
    try:
        mg = build_musicgen(cfg.d_model, cfg.n_layers, cfg.n_heads, k, cb).to(dev)
        res["params_musicgen"] = sum(q.numel() for q in mg.parameters())
    except Exception as e:  # transformers missing, or its MusicGen not buildable offline: the row is skipped
        mg, res["musicgen_skipped"] = None, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    g = torch.Generator().manual_seed(1)
    for b in batches:
        prompt = torch.stack([torch.randint(r.start, r.stop, (b, prompt_len), generator=g) for r in ranges], -1)
        prompt = prompt.to(dev)
        try:
            model.generate(prompt, 2, stream_mask=mask, top_k=250, seed=0)  # warm-up
            best = min(_timed(lambda p=prompt: model.generate(p, n, stream_mask=mask, top_k=250, seed=0), dev)[1]
                       for _ in range(rounds))
            res[f"frames_per_s_unisono_b{b}"] = b * n / best
            res[f"ms_per_frame_unisono_b{b}"] = 1000 * best / n
        except Exception as e:  # the peer's row still comes
            res[f"unisono_error_b{b}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        if mg is not None:
            best_mg, frames = float("inf"), n
            for _ in range(rounds):
                wall, _, frames = musicgen_gen_time(mg, b, prompt_len, n, k, cb, device=str(dev))
                best_mg = min(best_mg, wall)
            res[f"frames_per_s_musicgen_b{b}"] = b * frames / best_mg
            res[f"ms_per_frame_musicgen_b{b}"] = 1000 * best_mg / frames
            if f"frames_per_s_unisono_b{b}" in res:
                res[f"speed_ratio_unisono_vs_musicgen_b{b}"] = (
                    res[f"frames_per_s_unisono_b{b}"] / res[f"frames_per_s_musicgen_b{b}"])
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller run (about a minute): 1 s of audio, short training")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--no-quant", action="store_true", help="skip the int8 and int4 rows (ours and the peer's)")
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--codebook", type=int, default=1024)
    p.add_argument("--seconds", type=float, default=None, help="audio seconds to generate per row")
    p.add_argument("--rounds", type=int, default=None, help="repeat each generation measurement, keep the best")
    p.add_argument("--checkpoint", help="time this trained model (and a MusicGen of its sizes) instead; see above")
    p.add_argument("--device", default="cpu", help="with --checkpoint: cpu or cuda (default cpu)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="with --checkpoint: batch sizes")
    a = p.parse_args(argv)
    if a.checkpoint:
        res = checkpoint_rows(a.checkpoint, a.device, a.batches, a.seconds or 5.0, a.rounds or 2)
        print(" ".join(f"{key}={val:.4g}" if isinstance(val, float) else f"{key}={val}" for key, val in res.items()))
        if a.json:
            from unisono.fileio import write_json

            write_json(a.json, res)
        return 0
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    seconds = a.seconds or (0.5 if a.quick else 5.0)
    rounds = a.rounds or (2 if a.quick else 3)
    n = int(round(seconds * FRAME_RATE))
    prompt_len = 10
    train_b, train_t, train_steps = (2, 100, 1) if a.quick else (4, 250, 3)
    batches = (1, 8)
    k, cb = a.streams, a.codebook

    models = build_models(a.d_model, a.layers, a.heads, k, cb)
    mg = build_musicgen(a.d_model, a.layers, a.heads, k, cb)
    peers = {"musicgen": mg}
    v = models["delay"].cfg.vocab_size
    mask = torch.zeros(k, v, dtype=torch.bool)
    for j in range(k):
        mask[j, 4 + j * cb : 4 + (j + 1) * cb] = True

    res: dict = {"device": "cpu", "threads": a.threads, "frames_generated": n, "frame_rate_hz": FRAME_RATE,
                 "quick": a.quick, "streams": k, "codebook_size": cb,
                 "params_musicgen": sum(q.numel() for q in mg.parameters())}
    rows = []
    t_start = time.perf_counter()
    for name, m in models.items():
        res[f"params_{name}"] = m.num_parameters()
        res[f"train_frames_per_s_{name}"] = train_fps(m, train_b, train_t, k, cb, train_steps)
        m.eval()
    if not a.no_quant:  # inference-only copies of the trained-shape models, and of the peer
        add_quantized(models)
        for q in QUANT:
            for name in ("delay", "multiscale"):
                res[f"params_{name}_{q}"] = res[f"params_{name}"]
        peers["musicgen_int8"] = musicgen_int8(mg)
        res["params_musicgen_int8"] = res["params_musicgen"]
    # generation: rounds interleave the models, so that a change of load on shared cores hits all alike
    best: dict[tuple[str, int], list[float]] = {}
    frames_mg = n
    for r in range(rounds):
        for name in list(models) + list(peers):
            for b in batches:
                if name in peers:
                    wall, cpu, frames_mg = musicgen_gen_time(peers[name], b, prompt_len, n, k, cb)
                else:
                    wall, cpu = gen_time(models[name], b, prompt_len, n, k, cb, mask)
                old = best.get((name, b), [float("inf"), float("inf")])
                best[(name, b)] = [min(old[0], wall), min(old[1], cpu)]
        print(f"  round {r + 1}/{rounds} done after {time.perf_counter() - t_start:.1f} s", flush=True)
    for (name, b), (wall, cpu) in best.items():
        frames = frames_mg if name in peers else n
        res[f"gen_rtf_{name}_b{b}"] = b * frames / FRAME_RATE / wall
        res[f"gen_rtf_cpu_{name}_b{b}"] = b * frames / FRAME_RATE / cpu
        res[f"gen_ms_per_frame_{name}_b{b}"] = 1000 * wall / frames
    res["wall_s"] = time.perf_counter() - t_start
    for name in models:
        for b in batches:
            res[f"gen_speed_ratio_{name}_vs_musicgen_b{b}"] = (
                res[f"gen_rtf_{name}_b{b}"] / res[f"gen_rtf_musicgen_b{b}"]
            )
            res[f"gen_speed_ratio_cpu_{name}_vs_musicgen_b{b}"] = (
                res[f"gen_rtf_cpu_{name}_b{b}"] / res[f"gen_rtf_cpu_musicgen_b{b}"]
            )
            if name.endswith(QUANT) and "musicgen_int8" in peers:  # quantized against the quantized peer
                res[f"gen_speed_ratio_{name}_vs_musicgen_int8_b{b}"] = (
                    res[f"gen_rtf_{name}_b{b}"] / res[f"gen_rtf_musicgen_int8_b{b}"])
    if "musicgen_int8" in peers:
        for b in batches:
            for c in ("", "cpu_"):
                res[f"gen_speed_ratio_{c}musicgen_int8_vs_musicgen_b{b}"] = (
                    res[f"gen_rtf_{c}musicgen_int8_b{b}"] / res[f"gen_rtf_{c}musicgen_b{b}"])

    print(f"{'model':<16}{'params(M)':>10}{'train fr/s':>12}"
          + "".join(f"{'rtf b' + str(b):>9}{'(cpu)':>7}{'x mg':>7}{'(cpu)':>7}" for b in batches))
    for name in list(models) + list(peers):
        line = f"{name:<16}{res['params_' + name] / 1e6:>10.2f}"
        line += f"{res.get('train_frames_per_s_' + name, float('nan')):>12.0f}"
        for b in batches:
            ratio = res.get(f"gen_speed_ratio_{name}_vs_musicgen_b{b}", 1.0)
            ratio_cpu = res.get(f"gen_speed_ratio_cpu_{name}_vs_musicgen_b{b}", 1.0)
            rtf, rtf_cpu = res[f"gen_rtf_{name}_b{b}"], res[f"gen_rtf_cpu_{name}_b{b}"]
            line += f"{rtf:>9.2f}{rtf_cpu:>7.2f}{ratio:>7.2f}{ratio_cpu:>7.2f}"
        rows.append(line)
        print(line)
    print(f"(rtf = seconds of audio generated per second of wall time, (cpu) per second of CPU time; {n} frames at "
          f"{FRAME_RATE:g} Hz per row; x mg = speed relative to MusicgenForCausalLM; {a.threads} thread(s); "
          f"MusicGen's parameter count includes its unused cross-attention layers; *_int8 / *_int4: weight-only "
          f"int8 / int4 for ours (unisono.lm.quant), dynamic int8 for MusicGen)")
    if a.json:
        from unisono.fileio import write_json

        write_json(a.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
