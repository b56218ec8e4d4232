"""Training the enhancement stage (:class:`unisono.codec.enhance.Enhancer`) on a pair pack, the codec frozen.

The run is the codec trainer's (:class:`unisono.codec.trainer.Trainer`: its ``fit`` loop, wall-clock budget,
progress bar, ``log.jsonl``, TensorBoard, recipe merging) with the enhancer as the generator: the frozen codec
decodes the pack's codes once at the start (:func:`unisono.codec.enhance_data.decode_inputs`, ``train.codebooks``
of them: the count the language model uses), then every step maps 16 kHz decodes to 48 kHz stereo and is scored
against the references by :func:`unisono.codec.enhance.enhancer_loss` (multi-resolution STFT, multi-scale mel at
48 kHz, KL; from ``train.disc_start`` on, hinge adversarial and feature matching with the codec's discriminators
run on each channel). Needs torch, numpy, pyyaml and tqdm only (no soundfile or soxr: the GPU image lacks them).

Output directory::

    OUT/enhancer/config.json + model.safetensors   the enhancer (``--enhance OUT/enhancer``, or copy it to a
                                                    checkpoint's ``enhancer/``)
    OUT/train_state.pt                              optimizers, discriminators, step, RNG, sampler (resume)
    OUT/train_config.yaml, OUT/log.jsonl            the recipe; one line per ``log_every`` steps

Running the same command again resumes.
"""

from __future__ import annotations

import copy
import io
import logging
import random
from dataclasses import fields
from pathlib import Path

import torch

from unisono.codec.discriminators import Discriminators
from unisono.codec.enhance import Enhancer, EnhancerConfig, enhancer_loss
from unisono.codec.enhance_data import PairSampler, code_fingerprint, decode_inputs, load_pairs
from unisono.codec.losses import MultiScaleMelLoss, discriminator_loss
from unisono.codec.trainer import Trainer, merge_recipe
from unisono.errors import UnisonoError
from unisono.fileio import atomic_dir, atomic_path, load_yaml

log = logging.getLogger("unisono")

DEFAULTS = {
    "model": {},
    "train": {
        "steps": 2000, "batch_size": 8, "segment_seconds": 0.5, "lr": 3e-4, "disc_lr": 3e-4, "betas": [0.8, 0.99],
        "lr_decay": 0.99999, "grad_clip": 100.0, "disc_grad_clip": 100.0, "disc_start": 500, "log_every": 20,
        "save_every": 200, "sample_every": 0, "seed": 0, "num_threads": 0, "max_seconds": 0, "codebooks": 4,
        "amp": "none",
    },
    "loss": {"stft": 1.0, "mel": 15.0, "kl": 0.01, "side": 1.0, "adv": 1.0, "fm": 2.0},
    "discriminator": {"periods": [2, 3, 5, 7, 11], "n_ffts": [2048, 1024, 512], "channels": 16},
}


def load_enhancer_config(path=None, overrides: dict | None = None) -> dict:
    """The enhancer's training recipe: :data:`DEFAULTS`, then the YAML file at ``path``, then ``overrides``."""
    cfg = merge_recipe(copy.deepcopy(DEFAULTS), path, overrides, free=("model",), what="enhancer config")
    known = {f.name for f in fields(EnhancerConfig)}
    unknown = sorted(set(cfg["model"]) - known)
    if unknown:
        raise UnisonoError(f"unknown keys {unknown} in section 'model'; valid: {sorted(known)}")
    EnhancerConfig(**cfg["model"]).validate()
    t = cfg["train"]
    if float(t["max_seconds"] or 0) < 0 or int(t["batch_size"]) < 1 or float(t["segment_seconds"]) <= 0:
        raise UnisonoError("enhancer config: train.max_seconds >= 0, train.batch_size >= 1 and "
                           "train.segment_seconds > 0")
    if t["amp"] not in ("none", "bf16"):
        raise UnisonoError(f"train.amp must be none or bf16, got {t['amp']!r}")
    return cfg


class EnhancerTrainer(Trainer):
    """The codec trainer's loop with the enhancer as the generator (see the module doc); ``self.codec`` is the
    frozen codec (no gradients, not in any optimizer)."""

    desc = "enhancer train"

    def __init__(self, config: dict, pack, out, codec_dir, device: str = "cpu", progress: bool = True):
        from unisono.codec import load_codec  # noqa: PLC0415 (the package's loader)

        self.cfg, self.out, self.device, self.progress = config, Path(out), torch.device(device), progress
        t = config["train"]
        if t["num_threads"]:
            torch.set_num_threads(int(t["num_threads"]))
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        items, meta = load_pairs(pack, "train", code_fingerprint(codec_dir))
        torch.manual_seed(t["seed"])
        random.seed(t["seed"])
        self.codec = load_codec(codec_dir, map_location=str(self.device)).eval().requires_grad_(False)
        inputs = decode_inputs(self.codec, items, int(t["codebooks"]), str(self.device))
        self.enhancer = Enhancer(EnhancerConfig(**config["model"])).to(self.device)
        cfg = self.enhancer.config
        if (cfg.in_rate, cfg.out_rate) != (meta["in_rate"], meta["out_rate"]):
            raise UnisonoError(f"the pairs are {meta['in_rate']} -> {meta['out_rate']} Hz, the enhancer "
                               f"{cfg.in_rate} -> {cfg.out_rate} Hz")
        d = config["discriminator"]
        self.disc = Discriminators(tuple(d["periods"]), tuple(d["n_ffts"]), d["channels"]).to(self.device)
        self.opt_g = torch.optim.AdamW(self.enhancer.parameters(), lr=t["lr"], betas=tuple(t["betas"]))
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=t["disc_lr"], betas=tuple(t["betas"]))
        decay = float(t["lr_decay"])
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, lambda s: decay ** s)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, lambda s: decay ** s)
        self.mel_loss = MultiScaleMelLoss(cfg.out_rate)
        seg = int(round(t["segment_seconds"] * cfg.in_rate / cfg.hop)) * cfg.hop
        if seg <= 0:
            raise UnisonoError(f"train.segment_seconds is too short for one enhancer latent ({cfg.hop} samples)")
        self.sampler = PairSampler(inputs, [it["ref"] for it in items], seg, seed=t["seed"])
        self.items, self.step, self.history, self.writer = items, 0, [], None

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"step": self.step, "enhancer": self.enhancer.state_dict(), "disc": self.disc.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
                "sampler": self.sampler.state_dict(), "torch_rng": torch.get_rng_state(),
                "py_rng": random.getstate(), "config": self.cfg}

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_dir(self.out / "enhancer") as tmp:  # the enhancer directory appears whole
            self.enhancer.save_pretrained(tmp)
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        with atomic_path(self.out / "train_state.pt") as tmp:
            Path(tmp).write_bytes(buf.getvalue())

    def maybe_resume(self) -> bool:
        path = self.out / "train_state.pt"
        if not path.exists():
            return False
        try:
            st = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:
            raise UnisonoError(f"{path} cannot be loaded ({str(e).splitlines()[0]}); delete it to start over") from None
        if st["config"]["model"] != self.cfg["model"]:
            raise UnisonoError(f"{path} was trained with another enhancer config; use a new --out or the same config")
        self.enhancer.load_state_dict(st["enhancer"])
        self.disc.load_state_dict(st["disc"])
        for name in ("opt_g", "opt_d", "sched_g", "sched_d", "sampler"):
            getattr(self, name).load_state_dict(st[name])
        torch.set_rng_state(st["torch_rng"])
        random.setstate(st["py_rng"])
        self.step = int(st["step"])
        return True

    # -- one step -----------------------------------------------------------------------------------
    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
        """One enhancer (and, from ``disc_start``, discriminator) update on ``(x [B, 1, S] at 16 kHz, y [B, 2, 3 S]
        at 48 kHz)``; the step's figures as 0-dim tensors."""
        t, w = self.cfg["train"], self.cfg["loss"]
        x, y = (b.to(self.device, non_blocking=True) for b in batch)
        self.enhancer.train()
        out, kl = self.enhancer(x)
        n = y.shape[-1]
        use_gan = self.step >= t["disc_start"] and (w["adv"] > 0 or w["fm"] > 0)
        logs = {}
        if use_gan:  # every channel is one signal to the discriminators
            self.opt_d.zero_grad(set_to_none=True)
            real, fake = self._disc(y.reshape(-1, 1, n)), self._disc(out.detach().reshape(-1, 1, n))
            d_loss = discriminator_loss(real, fake)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), t["disc_grad_clip"])
            self.opt_d.step()
            self.sched_d.step()
            logs.update(disc=d_loss.detach(), d_real=torch.stack([r.detach().mean() for r, _ in real]).mean(),
                        d_fake=torch.stack([f.detach().mean() for f, _ in fake]).mean())
        self.disc.requires_grad_(False)  # the generator's terms: no weight gradients for the discriminators
        losses = enhancer_loss(out, kl, y, self.mel_loss, self._disc if use_gan else None, w)  # train.amp applies
        self.disc.requires_grad_(True)
        self.opt_g.zero_grad(set_to_none=True)
        losses["total"].backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.enhancer.parameters(), t["grad_clip"])
        self.opt_g.step()
        self.sched_g.step()
        logs.update({("loss" if k == "total" else k): v.detach() for k, v in losses.items()}, grad_norm=gnorm.detach())
        self.step += 1
        return logs

    def postfix(self, logs: dict) -> dict:
        return {"mel": f"{logs['mel']:.3f}", "stft": f"{logs['stft']:.3f}",
                **({"adv": f"{logs['adv']:.2f}"} if "adv" in logs else {})}

    def log_samples(self) -> None:  # audio goes to the benchmark (benchmarks/enhancer_quality.py), not TensorBoard
        return None


def train_enhancer(config_path=None, pack=None, out=None, codec_dir=None, overrides: dict | None = None,
                   device: str = "cpu", steps: int | None = None, progress: bool = True) -> EnhancerTrainer:
    """Train (or resume) an enhancer on the pair pack ``pack`` with the frozen codec in ``codec_dir``; returns the
    trainer (``trainer.enhancer`` is the model, saved in ``out/enhancer``)."""
    if pack is None or out is None or codec_dir is None:
        raise UnisonoError("enhancer training needs --pairs, --out and a codec")
    out = Path(out)
    saved = out / "train_config.yaml"
    if (out / "train_state.pt").exists() and saved.is_file() and config_path is None:
        config_path = saved  # a resume without --config: the run's own recipe
    cfg = load_enhancer_config(config_path, overrides)
    if saved.is_file() and (out / "train_state.pt").exists():
        before = (load_yaml(saved.read_text()) or {}).get("model")
        if before is not None and before != cfg["model"]:
            raise UnisonoError(f"{out} holds a run with another enhancer model config; use a new --out")
    trainer = EnhancerTrainer(cfg, pack, out, codec_dir, device, progress)
    trainer.maybe_resume()
    trainer.fit(steps)
    return trainer
