"""The enhancement stage against plain resampling, on the held-out pairs of a pair pack (music and sounds).

    python benchmarks/enhancer_quality.py --pairs PACK --enhancer RUN/enhancer [--json out.json]

Every system maps the codec's 16 kHz mono decode (``--codebooks`` codebooks, default 4: the language model's) of a
held-out clip to 48 kHz stereo, scored against the clip's 48 kHz stereo reference:

- ``lsd_hi``: log-spectral distance of the 8-24 kHz band in dB (2048-point STFT, hop 512, per channel: the RMS over
  the band's bins of the difference of 10 log10 power, powers floored at 1e-8 (-80 dB), averaged over frames);
- ``mel``: the multi-scale mel distance the enhancer is trained with (unisono.codec.losses.MultiScaleMelLoss at
  48 kHz: L1 of log-mel and mel at 7 window sizes, per channel);
- ``fd``: Frechet distance (unisono.eval.metrics.frechet.frechet_distance) between the Gaussians of per-second,
  per-channel 128-d embeddings (mean and std over time of 64-band log-mel, 2048-point STFT at 48 kHz, 0-24 kHz) of
  the system's outputs and of the references;
- ``icc_err``: absolute difference between the system's inter-channel coherence |sum_t L R*|^2 / (sum_t |L|^2
  sum_t |R|^2) and the reference's, per 2048-point STFT bin, averaged over the bins weighted by the reference's power
  in them (``icc``: the system's own coherence so weighted; a mono copy has 1; ``reference_icc``: the references');
- ``cpu_s_per_s``: CPU seconds (process time, ``--threads`` torch threads) per second of audio.

Systems: ``resample`` (soxr HQ to 48 kHz, copied to both channels: plain resampling), ``linear`` (the enhancer's own
base, linear interpolation: what an untrained enhancer returns), each ``--enhancer`` given, and the ``bandlimit``
ceiling row (the reference's own mono downmix through 16 kHz and back, no codec: what resampling of a perfect
codec would score).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

FLOOR = 1e-8


def _spec(x: np.ndarray, n_fft: int = 2048, hop: int = 512) -> torch.Tensor:
    """``x [C, S]`` -> complex STFT ``[C, F, T]``."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return torch.stft(t, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True)


def lsd_hi(est: np.ndarray, ref: np.ndarray, sr: int = 48000, lo: float = 8000.0) -> float:
    a, b = _spec(est).abs().pow(2), _spec(ref).abs().pow(2)
    k = int(lo / (sr / 2) * (a.shape[1] - 1))
    d = 10 * torch.log10(a[:, k:].clamp_min(FLOOR)) - 10 * torch.log10(b[:, k:].clamp_min(FLOOR))
    return float(d.pow(2).mean(dim=1).sqrt().mean())


def coherence(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inter-channel coherence per STFT bin ``[F]`` of ``x [2, S]`` (1 where both channels are silent: a copy) and
    the bins' power ``[F]`` (both channels, all frames)."""
    s = _spec(x).to(torch.complex128)
    cross = (s[0] * s[1].conj()).sum(-1).abs().pow(2)
    p0, p1 = s[0].abs().pow(2).sum(-1), s[1].abs().pow(2).sum(-1)
    power = p0 * p1
    coh = torch.where(power > 1e-30, cross / power.clamp_min(1e-30), torch.ones_like(power))
    return coh.clamp(0, 1).numpy(), (p0 + p1).numpy()


def embeddings(x: np.ndarray, sr: int = 48000) -> list[np.ndarray]:
    """Per-second, per-channel 128-d embeddings (mean and std over time of 64-band log-mel at 48 kHz)."""
    from unisono.audio import mel_spectrogram

    out = []
    for ch in x:
        for i in range(0, max(1, ch.shape[0] - sr + 1), sr):
            m = mel_spectrogram(np.ascontiguousarray(ch[i : i + sr]), sr, n_fft=2048, hop_length=512, n_mels=64)
            m = np.asarray(m)
            out.append(np.concatenate([m.mean(axis=1), m.std(axis=1)]))
    return out


def systems(args, codec_rate: int):
    """``{name: fn(decode float32 [S] at 16 kHz) -> [2, 3 S] at 48 kHz}``."""
    from unisono.audio import resample
    from unisono.codec.enhance import Enhancer, EnhancerConfig

    base = Enhancer(EnhancerConfig()).eval()
    out = {
        "resample": lambda x: np.repeat(resample(x, codec_rate, 48000)[None], 2, axis=0),
        "linear": lambda x: base.enhance(x, codec_rate).numpy(),
    }
    for d in args.enhancer:
        enh = Enhancer.from_pretrained(d).eval()
        name = args.name[len(out) - 2] if len(args.name) > len(out) - 2 else f"enhancer:{Path(d).parent.name}"
        out[name] = lambda x, enh=enh: enh.enhance(x, codec_rate).numpy()
    return out


def score(args) -> dict:
    from unisono import checkpoint as C
    from unisono.audio import resample
    from unisono.codec import load_codec
    from unisono.codec.enhance_data import code_fingerprint, decode_inputs, load_pairs
    from unisono.codec.losses import MultiScaleMelLoss
    from unisono.eval.metrics.frechet import frechet_distance

    torch.set_num_threads(args.threads)
    codec_dir = args.codec or C.codec_dir(C.DEFAULT_CHECKPOINT)
    items, meta = load_pairs(args.pairs, args.split, code_fingerprint(codec_dir))
    codec = load_codec(codec_dir).eval()
    decodes = [x.numpy() for x in decode_inputs(codec, items, args.codebooks)]
    mel = MultiScaleMelLoss(48000)
    runs = systems(args, codec.sample_rate)
    band = lambda it: np.repeat(resample(resample(it["ref"].numpy().mean(0), 48000, 16000), 16000, 48000)[None], 2, 0)  # noqa: E731
    rows, emb_ref = {}, {k: [] for k in ("music", "sound", "all")}
    for it in items:
        for k in (it["kind"], "all"):
            emb_ref[k] += embeddings(it["ref"].numpy())
    for name, fn in [*runs.items(), ("bandlimit", None)]:
        per = {k: {"lsd_hi": [], "mel": [], "icc_err": [], "icc": [], "emb": [], "cpu": 0.0, "sec": 0.0}
               for k in ("music", "sound", "all")}
        for it, x in zip(items, decodes):
            ref = it["ref"].numpy()
            t0 = time.process_time()
            y = fn(x) if fn is not None else band(it)
            cpu = time.process_time() - t0
            n = min(y.shape[-1], ref.shape[-1])
            y, r = y[:, :n], ref[:, :n]
            with torch.no_grad():
                m = float(mel(torch.from_numpy(y)[:, None].float(), torch.from_numpy(r)[:, None].float()))
            (c_sys, _), (c_ref, w) = coherence(y), coherence(r)
            w = w / w.sum()
            for k in (it["kind"], "all"):
                p = per[k]
                p["lsd_hi"].append(lsd_hi(y, r))
                p["mel"].append(m)
                p["icc_err"].append(float((np.abs(c_sys - c_ref) * w).sum()))
                p["icc"].append(float((c_sys * w).sum()))
                p["emb"] += embeddings(y)
                p["cpu"] += cpu
                p["sec"] += n / 48000
        rows[name] = {k: {"lsd_hi": float(np.mean(p["lsd_hi"])), "mel": float(np.mean(p["mel"])),
                          "fd": frechet_distance(np.stack(p["emb"]), np.stack(emb_ref[k])),
                          "icc_err": float(np.mean(p["icc_err"])), "icc": float(np.mean(p["icc"])),
                          "cpu_s_per_s": p["cpu"] / max(p["sec"], 1e-9), "items": len(p["mel"]),
                          "seconds": round(p["sec"], 1)}
                      for k, p in per.items() if p["mel"]}
    def weighted(x):
        c, w = coherence(x)
        return float((c * w).sum() / w.sum())

    ref_icc = {k: float(np.mean([weighted(it["ref"].numpy()) for it in items if k == "all" or it["kind"] == k]))
               for k in ("music", "sound", "all")}
    return {"pairs": str(args.pairs), "split": args.split, "codebooks": args.codebooks, "threads": args.threads,
            "enhancers": args.enhancer, "reference_icc": ref_icc, "rows": rows}


def table(res: dict) -> str:
    head = f"{'system':<24} {'kind':<6} {'items':>5} {'LSD 8-24k dB':>12} {'mel dist':>9} {'FD':>8} " \
           f"{'ICC err':>8} {'ICC':>6} {'CPU s/s':>8}"
    lines = [head, "-" * len(head)]
    for name, kinds in res["rows"].items():
        for k, r in kinds.items():
            lines.append(f"{name:<24} {k:<6} {r['items']:>5} {r['lsd_hi']:>12.2f} {r['mel']:>9.3f} {r['fd']:>8.2f} "
                         f"{r['icc_err']:>8.3f} {r['icc']:>6.3f} {r['cpu_s_per_s']:>8.3f}")
    ref = res["reference_icc"]
    lines.append(f"reference ICC: music {ref['music']:.3f}, sound {ref['sound']:.3f}, all {ref['all']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", required=True, help="a pair pack (unisono codec enhancer-pairs)")
    p.add_argument("--split", default="test", help="its split to score")
    p.add_argument("--enhancer", action="append", default=[], help="an enhancer directory (repeatable)")
    p.add_argument("--name", action="append", default=[], help="a row name for each --enhancer, in order")
    p.add_argument("--codec", help="the codec that decodes the pairs (default: the shipped model's)")
    p.add_argument("--codebooks", type=int, default=4, help="codebooks of the decode")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the CPU cost column)")
    p.add_argument("--json", help="write the results to this JSON file")
    args = p.parse_args(argv)
    res = score(args)
    print(table(res))
    if args.json:
        from unisono.fileio import write_json

        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
