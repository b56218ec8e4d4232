"""Preference tuning of a packaged checkpoint on automatically ranked samples (DPO).

The loop, for one task:

1. **prompts**: cuts of a corpus split that serve the task; their conditions are read off the cut as the
   evaluation harness reads them (:class:`~unisono.eval.model_system.PipelineSystem`);
2. **candidates**: ``N`` samples per prompt from the checkpoint, each with its own seed (one batch of ``N``
   rows, every row with its own generator: candidate ``j`` equals ``Pipeline.generate(..., seed=seed+j)``);
3. **ranking**: every candidate is scored with a :data:`RANK_METRICS` entry (harness evaluators: WER,
   speaker similarity, attribute classifiers, ...; or cheap signal measures);
4. **pairs**: per prompt the best candidate is *chosen* and the worst *rejected*; ties are skipped;
5. **examples**: prompt conditions + candidate codes -> the task template's training example (the token
   layout the model was trained on), with the trailing frames that carry no loss trimmed;
6. **training**: :func:`~unisono.train.dpo.dpo_objective` (DPO + a cross-entropy regulariser on the chosen
   examples) of a policy initialised from the checkpoint against the frozen checkpoint;
7. **output**: a new packaged checkpoint (the input's tokenizers, codec and templates with the tuned weights)
   and ``dpo_report.json``: the metric's mean on held-out prompts before and after.

A run is described by :class:`DPOSettings` (a strict YAML file: ``unisono dpo --config FILE``, configs/dpo/).
Each update is :class:`unisono.train.loop.OptimStep` (clipping, the non-finite policy, the warm-up). The ranked
pairs, then every ``save_every`` updates the training state, are saved in ``OUT.resume/``: the same run started
again continues from there without sampling anew.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unisono.checkpoint import carried_parts, write_checkpoint
from unisono.errors import UnisonoError
from unisono.eval.corpus import (
    build_items,
    load_corpus_cuts,
    select_cuts,
    to_output,
    train_attribute_classifiers,
)
from unisono.eval.metrics import EVAL_SAMPLE_RATE, score
from unisono.eval.metrics.classifier import get_classifier
from unisono.eval.metrics.frechet import mel_stats_embedding
from unisono.eval.model_system import PipelineSystem
from unisono.fileio import atomic_dir, write_json, write_jsonl
from unisono.inference import Decoded, Pipeline
from unisono.options import GenerationOptions
from unisono.tasks import load_templates
from unisono.train.dpo import dpo_objective
from unisono.train.loop import OptimStep, ResumeState, StepSettings, make_optimizer
from unisono.train.settings import read_settings_file, resolve_paths, settings_from_dict

EMPTY_OUTPUT_SECONDS = 0.1  # an empty output is scored as this much silence
EVAL_SEED_OFFSET = 1_000_003  # held-out samples use seeds far from the training candidates'


# ------------------------------------------------------------------------------------------ metrics
@dataclass(frozen=True)
class RankMetric:
    """One way to score a candidate: ``value(wav16k [S], ref) -> float`` (``nan``: not scorable).

    ``harness``: the harness metrics it is made of; the metric applies to a task when the harness computes
    all of them for that task (the template's ``metrics``). ``classifier``: the attribute classifier it needs.
    """

    name: str
    description: str
    higher_is_better: bool
    harness: tuple[str, ...] = ()
    combine: Callable[[dict], float] | None = None  # harness values -> the score
    classifier: str | None = None
    needs: tuple[str, ...] = ()  # reference attributes without which a candidate cannot be scored

    def scorable(self, ref) -> bool:
        """Whether ``ref`` has what this metric compares against (a multi-event scene has no one ``event``)."""
        return all((ref.attributes or {}).get(a) is not None for a in self.needs)

    def applies_to(self, template) -> bool:
        """Whether this metric can rank the outputs of ``template`` (a :class:`unisono.tasks.TaskTemplate`):
        an audio output whose template lists every harness metric it is made of."""
        return template.output == "audio" and all(h in template.metrics for h in self.harness)

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b


def _duration_error(wav: np.ndarray, ref) -> float:
    if ref.audio is None:
        return math.nan
    return abs(wav.shape[-1] - ref.audio.shape[-1]) / EVAL_SAMPLE_RATE


def class_probability(attribute: str, wav: np.ndarray, ref) -> float:
    """Probability the attribute classifier gives to the requested class (``ref.attributes[attribute]``)."""
    clf = get_classifier(attribute)
    true = ref.attributes.get(attribute)
    if true is None or str(true) not in clf.classes:
        return math.nan
    x = (torch.as_tensor(mel_stats_embedding(wav, EVAL_SAMPLE_RATE), dtype=torch.float32) - clf.mean) / clf.std
    p = torch.softmax(x @ clf.weight.T + clf.bias, dim=-1)
    return float(p[clf.classes.index(str(true))])


def _value(key: str) -> Callable[[dict], float]:
    return lambda v: float(v[key])


RANK_METRICS: dict[str, RankMetric] = {m.name: m for m in [
    RankMetric("wer", "word error rate of the Whisper tiny.en transcript against the text (lower is better)",
               False, ("wer",), _value("wer")),
    RankMetric("speaker_sim", "speaker similarity (resemblyzer cosine) to the voice prompt (higher is better)",
               True, ("sim",), _value("speaker_sim")),
    RankMetric("wer+spk", "speaker similarity minus word error rate (higher is better): intelligible and in "
               "the prompt's voice", True, ("wer", "sim"), lambda v: float(v["speaker_sim"]) - float(v["wer"])),
    RankMetric("event", "the event classifier recognises the requested sound class (1/0)", True, ("event",),
               _value("event_acc"), classifier="event", needs=("event",)),
    RankMetric("event_prob", "probability the event classifier gives to the requested sound class", True,
               ("event",), classifier="event", needs=("event",)),
    RankMetric("instrument", "the instrument classifier recognises the requested instrument (1/0)", True,
               ("instrument",), _value("instrument_acc"), classifier="instrument", needs=("instrument",)),
    RankMetric("instrument_prob", "probability the instrument classifier gives to the requested instrument",
               True, ("instrument",), classifier="instrument", needs=("instrument",)),
    RankMetric("tempo", "estimated tempo within 8% of the requested tempo (1/0)", True, ("tempo",),
               _value("tempo_acc"), needs=("tempo_bpm",)),
    RankMetric("key", "estimated key equals the requested key (1/0)", True, ("key",), _value("key_acc"),
               needs=("key",)),
    RankMetric("events", "absolute error of the estimated number of sound events (lower is better)", False,
               ("events",), _value("event_count_abs_err"), needs=("n_events",)),
    RankMetric("mel", "multi-scale log-mel L1 distance to the reference audio (lower is better)", False,
               ("mel",), _value("mel_distance")),
    RankMetric("sisdr", "scale-invariant SDR to the reference, dB (higher is better)", True, ("sisdr",),
               _value("si_sdr_db")),
    RankMetric("stoi", "STOI against the clean reference (higher is better)", True, ("stoi",), _value("stoi")),
    RankMetric("pesq", "PESQ wide-band MOS against the clean reference (higher is better)", True, ("pesq",),
               _value("pesq_wb")),
    RankMetric("duration", "absolute difference between the output's and the reference's duration, seconds "
               "(lower is better; no model: a cheap check against empty, truncated or run-on outputs)", False),
]}


def rank_metric(name: str, template=None) -> RankMetric:
    """The :data:`RANK_METRICS` entry ``name``, checked to apply to ``template`` (a
    :class:`unisono.tasks.TaskTemplate`, or a built-in task's name); one-line errors otherwise."""
    if name not in RANK_METRICS:
        raise UnisonoError(f"unknown ranking metric {name!r}; choose one of: {', '.join(RANK_METRICS)}")
    m = RANK_METRICS[name]
    if isinstance(template, str):
        builtin = load_templates()
        if template not in builtin:
            raise UnisonoError(f"unknown task {template!r}; choose one of: {', '.join(builtin)}")
        template = builtin[template]
    if template is not None and not m.applies_to(template):
        fit = [n for n, x in RANK_METRICS.items() if x.applies_to(template)]
        raise UnisonoError(f"metric {name!r} does not apply to task {template.name!r}; for {template.name} use one "
                           f"of: {', '.join(fit) or '(none: dpo ranks audio outputs)'}")
    return m


def score_output(metric: RankMetric, wav, sample_rate: int, ref) -> float:
    """Score one output ``wav [S]`` at ``sample_rate`` Hz against the harness reference ``ref``."""
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if wav.size == 0:
        if metric.name == "duration":
            return _duration_error(wav, ref)
        wav = np.zeros(int(EMPTY_OUTPUT_SECONDS * sample_rate), np.float32)
    out = to_output((wav, sample_rate))
    if metric.name == "duration":
        return _duration_error(out, ref)
    try:
        if metric.combine is None:
            return class_probability(metric.classifier, out, ref)
        vals: dict = {}
        for h in metric.harness:
            vals.update(score(h, out, ref))
        v = metric.combine(vals)
    except UnisonoError:  # an output the evaluator cannot score (e.g. silence for a level-based measure)
        return math.nan
    return float(v) if math.isfinite(v) else math.nan


# ------------------------------------------------------------------------------------------ pairs
def make_pairs(scores: list[list[float]], higher_is_better: bool, min_gap: float = 0.0) -> list[tuple[int, int, int]]:
    """``(prompt, chosen, rejected)`` indices: per prompt the best and the worst scored candidate.

    ``nan`` scores are ignored; a prompt with fewer than two scored candidates, or whose best and worst
    differ by no more than ``min_gap`` (a tie), gives no pair. Among equal scores the first candidate wins."""
    pairs = []
    for i, row in enumerate(scores):
        finite = [(j, float(s)) for j, s in enumerate(row) if s is not None and math.isfinite(s)]
        if len(finite) < 2:
            continue
        sign = 1.0 if higher_is_better else -1.0
        best = max(finite, key=lambda js: (sign * js[1], -js[0]))
        worst = min(finite, key=lambda js: (sign * js[1], js[0]))
        if abs(best[1] - worst[1]) <= min_gap or best[0] == worst[0]:
            continue
        pairs.append((i, best[0], worst[0]))
    return pairs


# ------------------------------------------------------------------------------------------ prompts
@dataclass
class Prompt:
    """One prompt: a corpus cut, the pipeline inputs read off it, its harness reference and options."""

    cut_id: str
    inputs: dict
    ref: object  # unisono.eval.metrics.Reference
    options: object  # GenerationOptions


@dataclass
class Candidate:
    """A sample: its ``decoded`` frames (plans and codes), ``wav [S]`` at the codec's rate, whether it ended."""

    seed: int
    decoded: Decoded
    wav: np.ndarray
    ended: bool
    score: float = math.nan

    @property
    def codes(self) -> torch.Tensor:
        """The output's codes ``[K, T]`` (local codec ids)."""
        return self.decoded.targets[-1].codes


def collect_prompts(pipe, task: str, corpus_dir, split: str, n: int | None, seed: int,
                    base_options, metric: RankMetric | None = None) -> list[Prompt]:
    """Up to ``n`` prompts of ``task`` from ``split`` of ``corpus_dir`` (a seeded sample, sorted by cut id).

    With ``metric``, only cuts it can score (:meth:`RankMetric.scorable`): no candidate is made in vain."""
    cuts = load_corpus_cuts(corpus_dir, split)
    chosen = select_cuts(cuts, task, None, seed)
    if not chosen:
        raise UnisonoError(f"no cut of split {split!r} of {corpus_dir} serves task {task!r}; choose another split "
                           "or a corpus made for this task")
    system = PipelineSystem(pipe, corpus_dir, split, seed=seed)
    order = list(chosen)
    random.Random(f"{seed}:{task}:{split}").shuffle(order)
    out: list[Prompt] = []
    for cut in order:
        if n is not None and len(out) >= n:
            break
        inputs = system.inputs_for(task, cut)
        if inputs is None:
            continue
        ref, _ = build_items(task, cut, system.prompts)[0]
        if metric is not None and not metric.scorable(ref):
            continue
        opts = base_options
        if pipe.templates[task].speech and cut.duration:
            opts = opts.with_(max_duration=min(opts.max_duration, 2.0 * cut.duration + 1.0))
        out.append(Prompt(cut.id, inputs, ref, opts))
    if not out:
        why = f" and what --rank-by {metric.name} needs ({', '.join(metric.needs)})" if metric and metric.needs else ""
        raise UnisonoError(f"none of the {len(chosen)} cuts of split {split!r} that list task {task!r} has all the "
                           f"inputs the task needs (speaker prompt, condition recordings, ...){why}")
    return sorted(out, key=lambda p: p.cut_id)


def _audio_target(pipe, task: str) -> None:
    if task not in pipe.tasks:
        raise UnisonoError(f"unknown task {task!r}; this checkpoint can do: {', '.join(pipe.tasks)}")
    if pipe.templates[task].target.modality != "codec":
        raise UnisonoError(f"task {task!r} answers with text; preference tuning here ranks audio outputs "
                           "(choose a task whose output is audio)")


def sample_candidates(pipe, task: str, prompt: Prompt, seeds: list[int], lm=None) -> list[Candidate]:
    """One candidate per seed for ``prompt``, sampled as one batch through the task's
    :class:`~unisono.inference.TaskIO` (row ``j`` uses its own generator seeded with ``seeds[j]``, so it equals
    ``Pipeline.generate(task, seed=seeds[j], ...)``; a reasoning task writes its plan first). ``lm``: the model
    to sample from (default the pipeline's)."""
    _audio_target(pipe, task)
    io = pipe.io(task)
    prep = io.prepare(dict(prompt.inputs), prompt.options)
    new = io.sample([prep] * len(seeds), prompt.options, seeds=seeds, lm=lm)
    out = []
    for row, s in enumerate(seeds):
        d = io.decode(new[row, : prep.max_new])
        out.append(Candidate(int(s), d, io.codec_decode(d.targets[-1].codes), d.ended))
    return out


def condition_segments(pipe, task: str, inputs: dict) -> list:
    """The task template's condition segments for ``inputs``, encoded as the pipeline encodes them."""
    io = pipe.io(task)
    return io.prepare(dict(inputs), pipe.default_options(task)).conditions


def candidate_example(pipe, task: str, conditions: list, cand: Candidate, example_id: str = "") -> dict:
    """The training example of a candidate (:meth:`unisono.inference.TaskIO.example`): conditions, the
    candidate's plan (a reasoning task) and codes, with its loss mask."""
    return pipe.io(task).example(conditions, cand.decoded, example_id)


# ------------------------------------------------------------------------------------------ settings
@dataclass
class DPOSettings:
    """Everything ``unisono dpo`` can be told besides its checkpoint, corpus and output (the CLI flags, and
    the keys of a ``--config`` YAML file: configs/dpo/). ``task`` and ``rank_by`` are required.

    ``warmup`` None: ``max(1, min(10, steps // 10))`` steps of linear warm-up, then a constant ``lr``.
    ``nonfinite``/``max_skipped``: the non-finite policy (:class:`unisono.train.loop.StepSettings`).
    ``save_every``: training steps between saved resumable states (0: only the ranked pairs are saved).
    ``device`` ``auto``: a GPU when one is visible."""

    task: str = ""
    rank_by: str = ""
    split: str = "train"
    prompts: int = 64
    candidates: int = 4
    eval_split: str = "valid"
    eval_prompts: int = 16
    eval_samples: int = 2
    beta: float = 0.1
    ce_weight: float = 0.1
    lr: float = 1e-5
    warmup: int | None = None
    steps: int = 100
    batch_size: int = 8
    grad_clip: float = 1.0
    nonfinite: str = "skip"
    max_skipped: int = 10
    save_every: int = 50
    min_gap: float = 0.0
    seed: int = 0
    top_k: int = 30
    top_p: float = 1.0
    temperature: float = 1.0
    guidance_scale: float = 1.0
    max_duration: float = 10.0
    classifiers: str | None = None
    device: str = "auto"
    overwrite: bool = False
    progress: bool = True
    command: str | None = None

    NOT_IDENTITY = ("eval_split", "eval_prompts", "eval_samples", "classifiers", "device", "overwrite", "progress",
                    "command")  # settings a resumed run may change

    @classmethod
    def from_dict(cls, d: dict, where: str = "dpo settings") -> DPOSettings:
        return settings_from_dict(cls, d, where)

    @classmethod
    def load(cls, path: str | Path) -> DPOSettings:
        """The settings of YAML file ``path`` (unknown keys are one-line errors; a relative ``classifiers``
        directory is read from the file's folder)."""
        d = read_settings_file(path, "see configs/dpo/ for examples")
        return cls.from_dict(resolve_paths(d, ("classifiers",), Path(path).resolve().parent), f"dpo config {path}")

    def validate(self) -> DPOSettings:
        if not self.task or not self.rank_by:
            raise UnisonoError("DPO needs a task and a ranking metric: give --task and --rank-by (or `task:` and "
                               "`rank_by:` in the --config file)")
        if self.candidates < 2:
            raise UnisonoError(f"--candidates must be at least 2 (a pair needs two samples), got {self.candidates}")
        if self.prompts < 1:
            raise UnisonoError(f"--prompts must be at least 1, got {self.prompts}")
        if self.eval_prompts < 0 or self.eval_samples < 1:
            raise UnisonoError("--eval-prompts must be >= 0 and --eval-samples >= 1")
        if self.steps < 1 or self.batch_size < 1:
            raise UnisonoError(f"--steps and --batch-size must be positive, got {self.steps} and {self.batch_size}")
        if not self.beta > 0:
            raise UnisonoError(f"--beta must be positive, got {self.beta}")
        if self.ce_weight < 0 or self.min_gap < 0 or self.save_every < 0:
            raise UnisonoError("--ce-weight, --min-gap and save_every must be >= 0")
        if not self.lr > 0:
            raise UnisonoError(f"--lr must be positive, got {self.lr}")
        self.step_settings()
        return self

    def step_settings(self) -> StepSettings:
        """The optimisation step: ``lr`` after a linear warm-up, no decay (checked)."""
        warm = self.warmup if self.warmup is not None else max(1, min(10, self.steps // 10))
        return StepSettings(lr=self.lr, total_steps=self.steps, warmup_steps=warm, min_lr_ratio=1.0,
                            grad_clip=self.grad_clip, nonfinite=self.nonfinite, max_skipped=self.max_skipped,
                            bf16=False).validate("dpo settings")

    def resolved_device(self) -> str:
        """``device`` with ``auto`` resolved; a one-line error for a GPU that is not there."""
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UnisonoError(f"--device {self.device} asked for, but no CUDA device is available; use --device cpu")
        return self.device


# ------------------------------------------------------------------------------------------ training
def pair_batches(n_pairs: int, batch_size: int, rng: random.Random, order: list[int]):
    """An endless stream of batches of pair indices: seeded shuffled epochs (``order`` holds what is left of
    the current epoch, changed in place so a saved copy resumes the stream)."""
    while True:
        batch = []
        while len(batch) < min(batch_size, n_pairs):
            if not order:
                order.extend(range(n_pairs))
                rng.shuffle(order)
            batch.append(order.pop())
        yield batch


def train_dpo(policy, reference, pairs: list[tuple[dict, dict]], s: DPOSettings,
              resume: ResumeState | None = None, saved: dict | None = None) -> list[dict]:
    """``s.steps`` AdamW updates (:class:`unisono.train.loop.OptimStep`) of :func:`dpo_objective` over ``pairs``
    (chosen, rejected) in seeded shuffled epochs of ``s.batch_size`` pairs; ``policy`` is updated in place.
    Every ``s.save_every`` updates the state goes to ``resume`` (with ``saved``, the ranking, beside it); a
    ``saved`` state that holds training continues from there. Returns one log row per update."""
    if not pairs:
        raise UnisonoError("no preference pairs to train on")
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    policy.eval()  # no dropout: at step 0 the policy's log-probs equal the reference's
    dev = next(policy.parameters()).device
    opt = make_optimizer(policy.named_parameters(), s.lr, 0.0, betas=(0.9, 0.95))
    optim = OptimStep(policy, opt, s.step_settings(), dev)
    rng, order, history = random.Random(s.seed), [], []
    if saved is not None and "policy" in saved:
        policy.load_state_dict(saved["policy"])
        optim.load_state_dict(saved["optim"])
        rng.setstate(saved["rng"])
        order, history = list(saved["order"]), list(saved["history"])
    batches = pair_batches(len(pairs), s.batch_size, rng, order)
    bar = tqdm(total=s.steps, initial=optim.step, desc="dpo", disable=not s.progress, dynamic_ncols=True)
    while optim.step < s.steps:
        batch = [pairs[i] for i in next(batches)]

        def forward(b):
            return dpo_objective(policy, reference, [c for c, _ in b], [r for _, r in b], s.beta, s.ce_weight)

        r = optim([batch], forward)
        if r.skipped:
            continue
        out = r.outputs[0]
        row = {"step": optim.step, "loss": r.loss, "margin": float(out["margin"]),
               "accuracy": float(out["accuracy"]), "grad_norm": r.grad_norm}
        if "ce" in out:
            row["ce"] = float(out["ce"])
        history.append(row)
        if resume is not None and s.save_every and optim.step % s.save_every == 0 and optim.step < s.steps:
            resume.save({**(saved or {}), "policy": policy.state_dict(), "optim": optim.state_dict(),
                         "rng": rng.getstate(), "order": list(order), "history": history})
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}", margin=f"{row['margin']:.3f}", acc=f"{row['accuracy']:.2f}")
    bar.close()
    return history


# ------------------------------------------------------------------------------------------ evaluation
def metric_mean(pipe, task: str, prompts: list[Prompt], metric: RankMetric, seeds: list[int],
                progress: bool = False, desc: str = "eval") -> dict:
    """The metric's mean over ``len(seeds)`` fresh samples of every prompt (``nan`` scores left out)."""
    values, per_prompt = [], {}
    for p in tqdm(prompts, desc=desc, disable=not progress, dynamic_ncols=True):
        cands = sample_candidates(pipe, task, p, seeds)
        vals = [score_output(metric, c.wav, pipe.sample_rate, p.ref) for c in cands]
        per_prompt[p.cut_id] = vals
        values += [v for v in vals if math.isfinite(v)]
    return {"mean": float(np.mean(values)) if values else math.nan, "n": len(values),
            "n_unscored": len(prompts) * len(seeds) - len(values), "per_prompt": per_prompt}


def before_and_after(pipe, tuned, prompts: list[Prompt], metric: RankMetric, s: DPOSettings) -> dict:
    """The metric's mean on the held-out ``prompts`` under the input and the tuned pipeline, with the same
    seeds (far from the training candidates')."""
    evaluation = {"split": s.eval_split, "prompts": len(prompts), "samples_per_prompt": s.eval_samples}
    if prompts:
        seeds = [s.seed + EVAL_SEED_OFFSET + j for j in range(s.eval_samples)]
        before = metric_mean(pipe, s.task, prompts, metric, seeds, s.progress, "eval before")
        after = metric_mean(tuned, s.task, prompts, metric, seeds, s.progress, "eval after")
        evaluation.update(before=before, after=after, change=after["mean"] - before["mean"],
                          improved=bool(metric.better(after["mean"], before["mean"])))
    return evaluation


# ------------------------------------------------------------------------------------------ ranking
def rank_candidates(pipe, prompts: list[Prompt], metric: RankMetric, s: DPOSettings) -> dict:
    """Sample ``s.candidates`` outputs per prompt, score them and pair the best with the worst. Returns the
    ranking (plain values and tensors, saved for a resumed run): ``pairs`` (chosen, rejected training
    examples), ``rows`` (one per prompt, for ``dpo_pairs.jsonl``), ``scores`` and ``index`` (prompt, chosen,
    rejected) and the ``seconds`` spent."""
    t0 = time.time()
    seeds = [s.seed + j for j in range(s.candidates)]
    all_cands: list[list[Candidate]] = []
    for p in tqdm(prompts, desc=f"sample+score ({s.rank_by})", disable=not s.progress, dynamic_ncols=True):
        cands = sample_candidates(pipe, s.task, p, seeds)
        for c in cands:
            c.score = score_output(metric, c.wav, pipe.sample_rate, p.ref)
            c.wav = np.zeros(0, np.float32)  # scored: only the codes are needed from here on
        all_cands.append(cands)
    scores = [[c.score for c in cs] for cs in all_cands]
    idx = make_pairs(scores, metric.higher_is_better, s.min_gap)
    if not idx:
        raise UnisonoError(f"no preference pairs: on every prompt the {s.candidates} candidates tied on "
                           f"{s.rank_by!r} (or could not be scored); use more --candidates, more --prompts or "
                           "another --rank-by")
    pairs, rows = [], []
    paired = {i: (c, r) for i, c, r in idx}
    for i, (p, cands) in enumerate(zip(prompts, all_cands)):
        row = {"cut": p.cut_id, "seeds": seeds, "scores": [c.score if math.isfinite(c.score) else None for c in cands],
               "frames": [int(c.codes.shape[-1]) for c in cands], "ended": [c.ended for c in cands]}
        if i in paired:
            cj, rj = paired[i]
            conds = condition_segments(pipe, s.task, p.inputs)
            pairs.append((candidate_example(pipe, s.task, conds, cands[cj], f"{p.cut_id}:chosen:{seeds[cj]}"),
                          candidate_example(pipe, s.task, conds, cands[rj], f"{p.cut_id}:rejected:{seeds[rj]}")))
            row.update(chosen=cj, rejected=rj)
        rows.append(row)
    return {"pairs": pairs, "rows": rows, "scores": scores, "index": [list(x) for x in idx],
            "seconds": time.time() - t0}


# ------------------------------------------------------------------------------------------ the command
def load_pipeline(directory, device: str) -> Pipeline:
    """A pipeline whose LM runs on ``device``; the codec (encoding inputs, decoding candidates for the CPU
    evaluators) stays on the CPU."""
    pipe = Pipeline.from_pretrained(directory, device="cpu")
    pipe.lm.to(device)
    return pipe


def check_dpo_paths(checkpoint: Path, data: Path, out: Path, s: DPOSettings) -> None:
    """One-line errors, before any work, for a corpus that is not one, an existing ``out`` or ``out`` equal to
    the checkpoint."""
    if not (data / "manifests").is_dir():
        raise UnisonoError(f"{data} is not a corpus made by `unisono synth` (no manifests/ directory)")
    if out.exists() and any(out.iterdir()) and not s.overwrite:
        raise UnisonoError(f"{out} already exists; choose another --out or pass --overwrite")
    if out.resolve() == checkpoint.resolve():
        raise UnisonoError("--out must differ from --checkpoint (the input is the frozen reference)")


def run_dpo(checkpoint, data, out, settings: DPOSettings) -> dict:
    """Preference-tune ``checkpoint`` on ``settings.task`` ranked by ``settings.rank_by`` with prompts of corpus
    ``data``; write the tuned checkpoint, ``dpo_report.json`` and ``dpo_pairs.jsonl`` to ``out`` (atomically:
    built in ``out.partial``, renamed when complete). An interrupted run's state (the ranked pairs, then the
    training every ``save_every`` steps) is kept in ``out.resume/``: the same call continues from it."""
    s = settings.validate()
    t_start = time.time()
    checkpoint, data, out = Path(checkpoint), Path(data), Path(out)
    check_dpo_paths(checkpoint, data, out, s)
    device = s.resolved_device()
    pipe = load_pipeline(checkpoint, device)
    metric = rank_metric(s.rank_by, pipe.io(s.task).template)  # the checkpoint's own template: its metrics
    _audio_target(pipe, s.task)
    options = GenerationOptions(top_k=s.top_k, top_p=s.top_p, temperature=s.temperature,
                                guidance_scale=s.guidance_scale, max_duration=s.max_duration).validate()
    identity = {"checkpoint": str(checkpoint.resolve()), "data": str(data.resolve()),
                **{k: v for k, v in asdict(s).items() if k not in DPOSettings.NOT_IDENTITY}}
    resume = ResumeState(out.with_name(out.name + ".resume"), identity)
    saved = resume.load()
    clf_dir = Path(s.classifiers) if s.classifiers else out.with_name(out.name + ".classifiers")
    with contextlib.ExitStack() as stack:
        if metric.classifier is not None and not s.classifiers:  # trained here for this run only
            stack.callback(shutil.rmtree, clf_dir, ignore_errors=True)
        tmp = stack.enter_context(atomic_dir(out))  # the tuned checkpoint, renamed into place when complete
        prompts = collect_prompts(pipe, s.task, data, s.split, s.prompts, s.seed, options, metric) if saved is None \
            else []
        eval_prompts = (collect_prompts(pipe, s.task, data, s.eval_split, s.eval_prompts, s.seed, options, metric)
                        if s.eval_prompts else [])
        clf_info = None
        if metric.classifier is not None:
            clf_info = train_attribute_classifiers(data, clf_dir, [metric.classifier], progress=s.progress)
        if saved is None:
            saved = {"ranking": rank_candidates(pipe, prompts, metric, s)}
            resume.save(saved)
        ranking = saved["ranking"]
        t0 = time.time()
        torch.manual_seed(s.seed)
        policy = copy.deepcopy(pipe.lm)
        history = train_dpo(policy, pipe.lm, [tuple(p) for p in ranking["pairs"]], s, resume, saved)
        t_train = time.time() - t0
        write_checkpoint(tmp, policy, pipe.vocab, templates=pipe.templates, **carried_parts(checkpoint))
        t0 = time.time()
        evaluation = before_and_after(pipe, load_pipeline(tmp, device), eval_prompts, metric, s)
        seconds = {"sample_and_score": round(ranking["seconds"], 2), "train": round(t_train, 2),
                   "eval": round(time.time() - t0, 2), "total": round(time.time() - t_start, 2)}
        report = _finite(dpo_report(checkpoint, data, s, metric, device, ranking, history, evaluation, clf_info,
                                    seconds))
        write_jsonl(tmp / "dpo_pairs.jsonl", _finite(ranking["rows"]))
        write_json(tmp / "dpo_report.json", report)
    resume.clear()
    return report


def dpo_report(checkpoint: Path, data: Path, s: DPOSettings, metric: RankMetric, device: str, ranking: dict,
               history: list[dict], evaluation: dict, clf_info, seconds: dict) -> dict:
    """The content of ``dpo_report.json``."""
    scores = ranking["scores"]
    scored = [x for row in scores for x in row if math.isfinite(x)]
    n_prompts = len(ranking["rows"])
    return {
        "task": s.task, "rank_by": s.rank_by, "metric": metric.description,
        "higher_is_better": metric.higher_is_better, "checkpoint": str(checkpoint.resolve()),
        "corpus": str(data.resolve()), "split": s.split, "prompts": n_prompts, "candidates": s.candidates,
        "candidates_scored": len(scored), "candidates_unscored": n_prompts * s.candidates - len(scored),
        "train_candidates_mean": float(np.mean(scored)) if scored else None,
        "pairs": len(ranking["pairs"]), "prompts_without_pair": n_prompts - len(ranking["pairs"]),
        "mean_pair_gap": float(np.mean([abs(scores[i][c] - scores[i][r]) for i, c, r in ranking["index"]])),
        "steps": s.steps, "beta": s.beta, "ce_weight": s.ce_weight, "lr": s.lr, "batch_size": s.batch_size,
        "seed": s.seed, "sampling": {"top_k": s.top_k, "top_p": s.top_p, "temperature": s.temperature,
                                     "guidance_scale": s.guidance_scale, "max_duration": s.max_duration},
        "final": history[-1], "history": history, "eval": evaluation, "classifiers": clf_info,
        "seconds": seconds, "device": device, "command": s.command,
    }


def describe_metrics() -> str:
    """A table of the ranking metrics and the tasks each applies to (for ``--help``)."""
    templates = load_templates()
    lines = []
    for name, m in RANK_METRICS.items():
        tasks = [t for t, tpl in templates.items() if m.applies_to(tpl)]
        lines.append(f"  {name:<16} {m.description}\n  {'':<16} tasks: {', '.join(tasks)}")
    return "\n".join(lines)


def _finite(x):
    """``x`` with every non-finite float replaced by ``None`` (valid JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
