"""Codec trainer: GAN training with multi-scale mel, adversarial, feature-matching and commitment losses.

Output directory layout::

    OUT/config.json, OUT/model.safetensors   the latest codec (load with ``load_codec(OUT)``)
    OUT/train_state.pt                       optimizers, discriminators, step, RNG, data position (resume)
    OUT/train_config.yaml                    the full training recipe
    OUT/log.jsonl                            one line per ``log_every`` steps: step, seconds, losses, balance
    OUT/tb/                                  TensorBoard: losses, codebook perplexity/usage, audio, spectrograms

Running the same command again resumes from ``train_state.pt``. ``init=DIR`` (``--init``) starts a new run
from the weights of a trained codec (its ``config.json`` is the run's model config, which the recipe's
``model`` section and ``--set`` may change as a resume may). ``train.max_seconds`` stops the run on a
wall-clock budget (saved, resumable), ``train.preload`` reads all training audio into memory once,
``train.amp: bf16`` runs the discriminators in bfloat16, ``train.decoder_codebooks: N`` trains a frozen
encoder's decoder on the first N codebooks only (instead of random prefixes: the count a language model uses).

``train.freeze_encoder: true`` trains the decoder only: the encoder and the codebooks stay as they are, so
every code already written (token shards, a language model trained on them) keeps its meaning while the
decoder gets better (e.g. continued training, or adversarial fine-tuning on a GPU). Quantizer dropout still
applies (the decoder learns every codebook prefix).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from unisono.codec.data import SegmentSampler, list_audio, read_item
from unisono.codec.discriminators import Discriminators
from unisono.codec.losses import (
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adv_loss,
    mel_distance,
)
from unisono.codec.model import Codec, CodecConfig
from unisono.codec.pitch import f0_track
from unisono.errors import UnisonoError
from unisono.fileio import atomic_path, load_yaml, write_text

log = logging.getLogger("unisono")

DEFAULTS = {
    "model": {},
    "train": {
        "steps": 20000, "batch_size": 8, "segment_seconds": 1.0, "lr": 3e-4, "disc_lr": 3e-4,
        "betas": [0.8, 0.99], "lr_decay": 0.999996, "warmup_steps": 0, "grad_clip": 100.0, "disc_start": 1000,
        "log_every": 20, "sample_every": 500, "save_every": 200, "seed": 0, "num_threads": 0,
        "freeze_encoder": False, "disc_grad_clip": 100.0, "max_seconds": 0, "preload": False,
        "decoder_codebooks": 0, "amp": "none",
    },
    "loss": {"mel": 15.0, "adv": 1.0, "fm": 2.0, "commit": 0.25, "codebook": 1.0, "semantic": 1.0, "f0": 10.0},
    "discriminator": {"periods": [2, 3, 5, 7, 11], "n_ffts": [1024, 512, 256], "channels": 16},
}


DECODER_KEYS = {"decoder_dim", "decoder_blocks", "n_fft", "phase", "harmonics", "harmonic_phase"}  # may change when
# only the decoder trains; of these, the ones without parameters of their own keep the trained decoder
KEEPS_DECODER = {"harmonic_phase"}


def load_config(path=None, overrides: dict | None = None, init=None, base_model: dict | None = None) -> dict:
    """The training recipe: defaults, updated by the YAML file at ``path``, then by ``overrides``. With ``init``
    (a trained codec's directory) its ``config.json``, or else ``base_model``, is the model section the recipe's
    values update."""
    cfg = copy.deepcopy(DEFAULTS)
    if init is not None:
        cfg["model"] = _init_model_config(init)
    elif base_model is not None:
        cfg["model"] = copy.deepcopy(base_model)
    merge_recipe(cfg, path, overrides, free=("model",))
    CodecConfig.from_dict(cfg["model"])  # validate early
    if float(cfg["train"]["max_seconds"] or 0) < 0:
        raise UnisonoError(f"train.max_seconds must be 0 (no limit) or positive, got {cfg['train']['max_seconds']}")
    return cfg


def merge_recipe(cfg: dict, path=None, overrides: dict | None = None, free: tuple[str, ...] = (),
                 what: str = "codec config") -> dict:
    """Update the sections of ``cfg`` (defaults) in place from the YAML file at ``path``, then ``overrides``:
    unknown sections, and unknown keys outside the ``free`` sections, are one-line errors. Returns ``cfg``."""
    sources = []
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UnisonoError(f"config {p} does not exist; see unisono/configs/codec/ for examples")
        sources.append(load_yaml(p.read_text()) or {})
    if overrides:
        sources.append(overrides)
    for src in sources:
        for section, values in src.items():
            if section not in cfg:
                raise UnisonoError(f"unknown section {section!r} in {what}; valid: {sorted(cfg)}")
            if section not in free:
                unknown = set(values or {}) - set(cfg[section])
                if unknown:
                    raise UnisonoError(
                        f"unknown keys {sorted(unknown)} in section {section!r}; valid: {sorted(cfg[section])}"
                    )
            cfg[section].update(values or {})
    return cfg


def _init_model_config(init) -> dict:
    p = Path(init) / "config.json"
    if not p.is_file() or not (Path(init) / "model.safetensors").is_file():
        raise UnisonoError(f"--init {init} is not a codec directory (needs config.json and model.safetensors)")
    model = json.loads(p.read_text())
    if model.pop("model_type", "unisono-codec") != "unisono-codec":
        raise UnisonoError(
            f"--init {init} holds another kind of model; it must be a codec made by 'unisono codec train'"
        )
    return model


def check_init(init, cfg: dict) -> set[str]:
    """The model settings a run from ``init`` changes; an error if they are more than a new run from it may
    change (decoder settings, with ``train.freeze_encoder``)."""
    changed = _changed_keys(_init_model_config(init), cfg["model"])
    if changed - (DECODER_KEYS if cfg["train"]["freeze_encoder"] else set()):
        raise UnisonoError(f"--init {init}: the recipe changes {', '.join(sorted(changed))}; only "
                           f"{', '.join(sorted(DECODER_KEYS))} may change, and only with train.freeze_encoder: true")
    return changed


def _changed_keys(old: dict, new: dict) -> set[str]:
    old, new = (CodecConfig.from_dict(c).to_dict() for c in (old, new))
    return {k for k in old if old[k] != new[k]}


def _spectrogram_image(wav: torch.Tensor, sample_rate: int):
    """Log-mel ``[1, n_mels, frames]`` scaled to [0, 1], low frequencies at the bottom (for TensorBoard)."""
    from unisono.audio import mel_spectrogram  # noqa: PLC0415 (soundfile/soxr: not on the GPU image)

    m = mel_spectrogram(wav.reshape(-1).float(), sample_rate, n_fft=1024, hop_length=160, n_mels=80)
    m = (m - m.max() + 8).clamp_min(0) / 8
    return m.flip(0)[None].numpy()


class Trainer:
    desc = "codec train"  # the progress bar's and the log's name of the run

    def __init__(self, config: dict, data, out, device: str = "cpu", progress: bool = True):
        self.cfg, self.out, self.device, self.progress = config, Path(out), torch.device(device), progress
        t = config["train"]
        if t["num_threads"]:
            torch.set_num_threads(int(t["num_threads"]))
        if self.device.type == "cuda":  # TF32 matrix products and convolutions; fixed shapes: tuned conv kernels
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(t["seed"])
        random.seed(t["seed"])
        self.codec = Codec(CodecConfig.from_dict(config["model"])).to(self.device)
        d = config["discriminator"]
        self.disc = Discriminators(tuple(d["periods"]), tuple(d["n_ffts"]), d["channels"]).to(self.device)
        self.frozen = bool(t["freeze_encoder"])
        if t["amp"] not in ("none", "bf16"):
            raise UnisonoError(f"train.amp must be none or bf16, got {t['amp']!r}")
        n, lo = int(t["decoder_codebooks"]), 2 if self.codec.config.f0_codebook else 1
        if n and not (self.frozen and lo <= n <= self.codec.num_codebooks):
            raise UnisonoError(
                f"train.decoder_codebooks={n}: needs train.freeze_encoder: true and a count from {lo} to "
                f"{self.codec.num_codebooks} (0: every prefix, with quantizer dropout)"
            )
        trained = self.codec.decoder if self.frozen else self.codec
        self.opt_g = torch.optim.AdamW([p for p in trained.parameters() if p.requires_grad], lr=t["lr"],
                                       betas=tuple(t["betas"]))
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=t["disc_lr"], betas=tuple(t["betas"]))
        # linear warm-up, then exponential decay; a fresh encoder's latents move far more per Adam step than
        # they are spread, which scrambles code assignments until the learning rate has warmed up
        warm, decay = int(t["warmup_steps"]), float(t["lr_decay"])
        schedule = lambda s: min(1.0, (s + 1) / warm) if warm and s < warm else decay ** (s - warm)  # noqa: E731
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, schedule)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, schedule)
        self.mel_loss = MultiScaleMelLoss(self.codec.sample_rate)
        sr = self.codec.sample_rate
        seg = int(round(t["segment_seconds"] * sr / self.codec.hop_length)) * self.codec.hop_length
        if seg <= 0:
            raise UnisonoError("train.segment_seconds is too short for one codec frame")
        self.items = list_audio(data, "train")
        self.sampler = SegmentSampler(self.items, sr, seg, seed=t["seed"], preload=bool(t["preload"]),
                                      progress=progress)
        self.step = 0
        self.history: list[dict] = []
        self.writer = None

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step, "codec": self.codec.state_dict(), "disc": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
            "sampler": self.sampler.state_dict(), "torch_rng": torch.get_rng_state(),
            "py_rng": random.getstate(), "config": self.cfg,
        }

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.codec.save_pretrained(self.out)
        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        with atomic_path(self.out / "train_state.pt") as tmp:
            Path(tmp).write_bytes(buf.getvalue())

    def maybe_resume(self) -> bool:
        path = self.out / "train_state.pt"
        if not path.exists():
            return False
        try:  # tensors, numbers, strings and containers only: no code runs while loading
            st = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:
            raise UnisonoError(f"{path} cannot be loaded ({str(e).splitlines()[0]}); it is truncated, corrupt or "
                               "not a codec training state: delete it to start over") from None
        changed = _changed_keys(st["config"]["model"], self.cfg["model"])
        if changed - (DECODER_KEYS if self.frozen else set()):
            raise UnisonoError(
                f"{path} was trained with another model config ({', '.join(sorted(changed))} differ); use a new --out "
                f"or the same config (with train.freeze_encoder: true, {', '.join(sorted(DECODER_KEYS))} may change)")
        state = st["codec"]
        new_decoder = bool(changed - KEEPS_DECODER)
        if changed and not new_decoder:
            log.info(f"codec train: the decoder of step {st['step']} goes on with {', '.join(sorted(changed))} changed")
        elif changed:  # a new decoder on the trained encoder and codebooks
            state = {k: v for k, v in state.items() if not k.startswith("decoder.")}
            state.update({k: v for k, v in self.codec.state_dict().items() if k.startswith("decoder.")})
            log.info(f"codec train: a new decoder ({', '.join(sorted(changed))} changed) on the codes of step "
                     f"{st['step']}")
        self.codec.load_state_dict(state)
        self.disc.load_state_dict(st["disc"])
        if bool(st["config"]["train"].get("freeze_encoder", False)) == self.frozen and not new_decoder:
            self.opt_g.load_state_dict(st["opt_g"])
            self.sched_g.load_state_dict(st["sched_g"])
        elif not new_decoder:  # switched to (or from) decoder-only training: a fresh generator optimizer
            log.info(f"codec train: {'decoder only' if self.frozen else 'whole codec'} from step {st['step']}: "
                     "new generator optimizer")
        self.opt_d.load_state_dict(st["opt_d"])
        self.sched_d.load_state_dict(st["sched_d"])
        self.sampler.load_state_dict(st["sampler"])
        torch.set_rng_state(st["torch_rng"])
        random.setstate(st["py_rng"])
        self.step = int(st["step"])
        return True

    def init_from(self, directory) -> None:
        """Start from the weights of the trained codec in ``directory`` (a new run: fresh optimizers, step 0).
        A decoder setting with weights of its own changed under ``freeze_encoder`` gives a new decoder on the
        trained encoder and codebooks, as a resume does."""
        changed = check_init(directory, self.cfg)
        state = Codec.from_pretrained(directory).state_dict()
        if changed - KEEPS_DECODER:
            state = {k: v for k, v in state.items() if not k.startswith("decoder.")}
            state.update({k: v for k, v in self.codec.state_dict().items() if k.startswith("decoder.")})
        self.codec.load_state_dict(state)
        log.info(
            f"codec train: started from {directory}" + (f" ({', '.join(sorted(changed))} changed)" if changed else "")
        )

    # -- one step -----------------------------------------------------------------------------------
    def train_step(self, wav: torch.Tensor) -> dict:
        """One generator (and, once the GAN has started, discriminator) update on ``wav [B, 1, S]``.

        Returns the step's figures as 0-dim tensors (no host-device synchronisation: a GPU runs ahead):
        losses, the gradient norm, and the discriminator's balance (``d_real``/``d_fake``: mean logits on real and
        generated audio, hinge targets +1 and -1)."""
        t, w = self.cfg["train"], self.cfg["loss"]
        self.codec.train()
        wav = wav.to(self.device, non_blocking=True)
        out = self._decoder_only(wav) if self.frozen else self.codec(wav)
        y = out["audio"][..., : wav.shape[-1]]
        use_gan = self.step >= t["disc_start"] and (w["adv"] > 0 or w["fm"] > 0)
        logs = {}
        if use_gan:  # discriminator update
            self.opt_d.zero_grad(set_to_none=True)
            real, fake = self._disc(wav), self._disc(y.detach())
            d_loss = discriminator_loss(real, fake)
            d_loss.backward()
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), t["disc_grad_clip"])
            self.opt_d.step()
            logs["disc"] = d_loss.detach()
            logs["d_real"] = torch.stack([r.detach().mean() for r, _ in real]).mean()
            logs["d_fake"] = torch.stack([f.detach().mean() for f, _ in fake]).mean()
        mel = self.mel_loss(y, wav)
        loss = w["mel"] * mel + w["commit"] * out["commit_loss"] + w["codebook"] * out["codebook_loss"]
        if use_gan:  # the generator's adversarial terms; no weight gradients for the discriminators here
            self.disc.requires_grad_(False)
            with torch.no_grad():
                real = self._disc(wav)
            fake = self._disc(y)
            self.disc.requires_grad_(True)
            adv, fm = generator_adv_loss(fake), feature_matching_loss(real, fake)
            loss = loss + w["adv"] * adv + w["fm"] * fm
            logs.update(adv=adv.detach(), fm=fm.detach())
        if "log_f0" in out:  # harmonic decoder: F0 and voicing against the tracker's (clean single voices)
            f0_loss = self._f0_loss(wav, out["log_f0"], out["voiced_logit"])
            loss = loss + w["f0"] * f0_loss
            logs["f0"] = f0_loss.detach()
        if "semantic_loss" in out:
            loss = loss + w["semantic"] * out["semantic_loss"]
            logs["semantic"] = out["semantic_loss"].detach()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.codec.parameters(), t["grad_clip"])
        self.opt_g.step()
        self.sched_g.step()
        if use_gan:
            self.sched_d.step()
        logs.update(loss=loss.detach(), mel=mel.detach(), commit=torch.as_tensor(out["commit_loss"]).detach(),
                    codebook=torch.as_tensor(out["codebook_loss"]).detach(), grad_norm=gnorm.detach())
        logs.update(out["stats"])
        self.step += 1
        return logs

    def _disc(self, wav: torch.Tensor) -> list:
        """The discriminators' ``[(logits, feature maps)]`` of ``wav``; with ``train.amp: bf16`` their convolutions
        run in bfloat16 (most of a GAN step's time) and the outputs come back as float32 for the losses."""
        if self.cfg["train"]["amp"] == "none":
            return self.disc(wav)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            outs = self.disc(wav)
        return [(logits.float(), [f.float() for f in feats]) for logits, feats in outs]

    def _f0_loss(self, wav: torch.Tensor, log_f0: torch.Tensor, voiced_logit: torch.Tensor) -> torch.Tensor:
        """L1 of log F0 on the frames the tracker calls voiced, plus the voicing decision's cross-entropy."""

        with torch.no_grad():
            f0, voiced = f0_track(wav[:, 0], self.codec.sample_rate, self.codec.hop_length)
        n = min(f0.shape[1], log_f0.shape[1])
        f0, voiced, log_f0, voiced_logit = f0[:, :n], voiced[:, :n], log_f0[:, :n], voiced_logit[:, :n]
        v = voiced.float()
        l1 = ((log_f0 - torch.log(f0.clamp_min(1.0))).abs() * v).sum() / v.sum().clamp_min(1.0)
        return l1 + F.binary_cross_entropy_with_logits(voiced_logit, v)

    def _decoder_only(self, wav: torch.Tensor) -> dict:
        """Training pass with the encoder and codebooks fixed: codes from eval mode, a random prefix of the
        codebooks per item (quantizer dropout), gradients into the decoder only."""
        q = self.codec.quantizer
        with torch.no_grad():
            self.codec.encoder.eval()
            q.eval()
            codes = self.codec.encode(wav)  # [B, K, T]
            f0, rvq = self.codec.split_codes(codes)
            k = torch.full((rvq.shape[0],), rvq.shape[1], device=codes.device)
            n = int(self.cfg["train"]["decoder_codebooks"])
            if n:  # the decoder trained for the first n codebooks only (the count a language model uses)
                k.fill_(n - (codes.shape[1] - rvq.shape[1]))
            elif q.dropout > 0:
                pick = torch.randint(1, rvq.shape[1] + 1, k.shape, device=codes.device)
                k = torch.where(torch.rand(k.shape, device=codes.device) < q.dropout, pick, k)
            z_q = sum(layer.dequantize(rvq[:, i]) * (k > i)[:, None, None]
                      for i, layer in enumerate(q.layers)).permute(0, 2, 1)
            stats = {}
            for i in range(codes.shape[1]):  # the codes in use (frozen codebooks: what the decoder sees)
                counts = torch.bincount(codes[:, i].reshape(-1), minlength=self.codec.codebook_size).float()
                p = counts / counts.sum()
                stats[f"perplexity_{i}"] = torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())
                stats[f"usage_{i}"] = (counts > 0).float().mean()
        zero = wav.new_zeros(())
        out = {"audio": self.codec.decoder(z_q, f0), "codes": codes, "commit_loss": zero, "codebook_loss": zero,
               "stats": stats}
        if self.codec.decoder.harmonic is not None and f0 is None:
            out["log_f0"], out["voiced_logit"] = self.codec.decoder.harmonic.last
        return out

    # -- logging ------------------------------------------------------------------------------------
    def _tb(self):
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (optional: tensorboard)
            except ImportError:  # tensorboard not installed: scalars still go to the progress bar
                self.writer = False
            else:
                self.writer = SummaryWriter(str(self.out / "tb"))
        return self.writer or None

    def postfix(self, logs: dict) -> dict:
        """The progress bar's figures of the last logged step."""
        return {"mel": f"{logs['mel']:.3f}", "ppl0": f"{logs.get('perplexity_0', 0):.0f}",
                **({"adv": f"{logs['adv']:.2f}"} if "adv" in logs else {})}

    def log_samples(self) -> None:
        tb = self._tb()
        self.codec.eval()
        sr = self.codec.sample_rate
        for i, item in enumerate(self.items[:2]):
            x = torch.from_numpy(read_item(item, sr, 0.0, 4.0))[None, None].to(self.device)
            codes = self.codec.encode(x)
            for k in sorted({1, min(4, self.codec.num_codebooks), self.codec.num_codebooks}):
                y = self.codec.decode(codes[:, :k])[..., : x.shape[-1]].cpu()
                if tb is not None:
                    tb.add_audio(f"sample{i}/k{k}", y.reshape(-1).clamp(-1, 1), self.step, sample_rate=sr)
                    tb.add_image(f"sample{i}/k{k}_mel", _spectrogram_image(y, sr), self.step)
                    tb.add_scalar(f"eval/mel_distance_k{k}", mel_distance(y, x.cpu(), sr), self.step)
            if tb is not None and self.step == 0:
                tb.add_audio(f"sample{i}/reference", x.reshape(-1).cpu(), 0, sample_rate=sr)
                tb.add_image(f"sample{i}/reference_mel", _spectrogram_image(x.cpu(), sr), 0)

    def _trim_log(self) -> None:
        """``log.jsonl`` holds this run's lines up to its current step only: a fresh run starts it anew, a
        resumed one drops the lines written after the saved step it resumes from."""
        path = self.out / "log.jsonl"
        if not path.exists():
            return

        def step_of(line: str) -> float:
            try:
                return float(json.loads(line).get("step", 0))
            except (ValueError, AttributeError):  # a line cut short by a kill: drop it
                return float("inf")

        keep = [line for line in path.read_text().splitlines() if self.step and step_of(line) <= self.step]
        write_text(path, "".join(line + "\n" for line in keep))

    def fit(self, steps: int | None = None) -> list[dict]:
        """Train until step ``steps`` (default ``train.steps``) or until ``train.max_seconds`` have passed (0: no
        limit), whichever comes first; saves at every ``save_every`` step and at the end. Returns the history (one
        dict of floats per step of this call)."""

        t = self.cfg["train"]
        total = int(steps if steps is not None else t["steps"])
        budget = float(t["max_seconds"] or 0)
        self.out.mkdir(parents=True, exist_ok=True)
        write_text(self.out / "train_config.yaml", yaml.safe_dump(self.cfg, sort_keys=False))
        bar = tqdm(total=total, initial=min(self.step, total), desc=self.desc, unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        start = last = time.time()
        pending: list[dict] = []  # figures as tensors until the next log step: one host-device sync per log (the
        # whole codec's quantizer still reads its perplexity to the host every step)
        logged = self.step
        self._trim_log()

        def flush() -> None:
            tensors = [v.reshape(()).float() for logs in pending for v in logs.values() if torch.is_tensor(v)]
            host = iter(torch.stack(tensors).tolist() if tensors else [])
            for logs in pending:
                self.history.append({k: next(host) if torch.is_tensor(v) else float(v) for k, v in logs.items()})
            pending.clear()

        def write_log() -> None:  # the steps since the last log line: history, log.jsonl, TensorBoard, bar
            nonlocal logged, last
            flush()
            logs, now = self.history[-1], time.time()
            rate = (self.step - logged) / max(now - last, 1e-9)
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, "seconds": round(now - start, 2), "steps_per_s": round(rate, 3),
                                    **logs}) + "\n")
            tb = self._tb()
            if tb is not None:
                for k, v in logs.items():
                    group = "codebooks" if k.startswith(("perplexity", "usage")) else "train"
                    tb.add_scalar(f"{group}/{k}", v, self.step)
                tb.add_scalar("train/steps_per_s", rate, self.step)
                tb.flush()
            logged, last = self.step, now
            bar.set_postfix(self.postfix(logs))

        while self.step < total:
            if budget and time.time() - start >= budget:
                log.info(f"{self.desc}: stopped on the wall-clock budget of {budget:g} s at step {self.step}")
                if pending:
                    write_log()
                self.save()
                break
            if t["sample_every"] and self.step % t["sample_every"] == 0:
                self.log_samples()
            pending.append(self.train_step(self.sampler.batch(t["batch_size"])))
            bar.update(1)
            if self.step % t["log_every"] == 0 or self.step == total:
                write_log()
            if self.step % t["save_every"] == 0 or self.step == total:
                self.save()
        bar.close()
        if self.writer:
            self.writer.close()
        return self.history


def train(config_path=None, data=None, out=None, overrides: dict | None = None, device: str = "cpu",
          steps: int | None = None, progress: bool = True, init=None) -> Trainer:
    """Train (or resume) a codec; returns the :class:`Trainer` (``trainer.codec`` is the model). ``init``: a
    trained codec's directory to start a new run from (ignored when ``out`` already holds a run to resume)."""
    if data is None or out is None:
        raise UnisonoError("codec training needs --data and --out")
    out = Path(out)
    resuming = (out / "train_state.pt").exists()
    if init is not None and Path(init).resolve() == out.resolve():
        raise UnisonoError(f"--init and --out are the same directory ({out}); train into a new --out")
    if resuming:  # the run's own model config (written at its start), whatever --init says now
        saved = out / "train_config.yaml"
        base = (load_yaml(saved.read_text()) or {}).get("model") if saved.is_file() else None
        cfg = load_config(config_path, overrides, None if base else init, base_model=base)
    else:
        cfg = load_config(config_path, overrides, init)
        if init is not None:
            check_init(init, cfg)  # before any model is built or audio read
    trainer = Trainer(cfg, data, out, device, progress)
    if trainer.maybe_resume():
        if init is not None:
            log.info(f"codec train: resuming {out} at step {trainer.step} (--init {init} applies to a new run only)")
    elif init is not None:
        trainer.init_from(init)
    trainer.fit(steps)
    return trainer

