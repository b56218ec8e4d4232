"""Scoring a generation function on a corpus split, per task, beside the reference ceiling and baselines.

The one interface a model plugs into is a **generation function** ``generate(task, cut) -> output``:
``task`` is a task name (``tts``, ``se``, ``asr``, ...), ``cut`` a Lhotse ``MonoCut`` of the built-in
corpus schema (docs/corpus.md) with paths resolved; the output is ``(wav, sample_rate)`` with ``wav``
``[S]`` or ``[C, S]`` (NumPy or torch) for audio tasks, a ``str`` for text tasks, or ``None`` when the
function cannot do that task (the item is skipped). For ``audio_qa`` the cut's ``custom["qa"]`` holds
exactly one ``[question, answer]`` pair: the question to answer (a fair function reads the question only).

Built-in systems: :func:`reference_system` (the ground truth itself; for ASR the recogniser's transcript
of the reference audio), the ceiling; :func:`copy_input_system` (returns the task's input audio), the
trivial baseline of SE, dereverberation, TSE, VC and editing; :class:`TrainPriorSystem` (answers and captions
from the training split without listening), the trivial baseline of QA and captioning.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from unisono.errors import UnisonoError
from unisono.eval.examples import save_example
from unisono.eval.harness import aggregate, fingerprint, score_items
from unisono.eval.metrics import Reference
from unisono.eval.metrics._common import EVAL_SAMPLE_RATE, at_rate
from unisono.fileio import write_json

GenerateFn = Callable[[str, object], object]

# task -> metrics computed for it
TASK_METRICS: dict[str, list[str]] = {
    "tts": ["wer", "sim"],
    "instruct_tts": ["wer"],
    "vc": ["wer", "sim", "mel"],
    "se": ["pesq", "stoi", "sisdr", "mel"],
    "dereverb": ["pesq", "stoi", "sisdr", "mel"],
    "tse": ["pesq", "stoi", "sisdr", "sim"],
    "speech_edit": ["wer", "sim", "mel"],
    "svs": ["f0", "mel"],
    "text_to_sound": ["event", "events", "fd"],
    "text_to_music": ["instrument", "tempo", "key", "fd"],
    "audio_edit": ["mel", "sisdr"],
    "asr": ["wer"],
    "caption": ["bleu", "text_sim"],
    "audio_qa": ["qa"],
    "superres": ["lsd", "pesq", "mel"],
    "text_to_sound_reasoning": ["event", "events", "fd"],  # a plan, then the audio: the audio is scored
    "text_to_music_reasoning": ["instrument", "tempo", "key", "fd"],
}


def cuts_from(task: str) -> str:
    """The task whose cuts serve ``task`` (the built-in template's ``cuts_from``; the task itself otherwise):
    a task such as ``text_to_sound_reasoning`` is scored on the same cuts as its source, paired."""
    from unisono.tasks import load_templates

    global _CUTS_FROM
    if _CUTS_FROM is None:
        _CUTS_FROM = {name: tpl.cuts_from for name, tpl in load_templates().items() if tpl.cuts_from}
    return _CUTS_FROM.get(task, task)


_CUTS_FROM: dict[str, str] | None = None
# tasks served by every cut of these kinds (templates with `kinds`, e.g. configs/tasks/superres.yaml)
TASK_KINDS: dict[str, tuple[str, ...]] = {"superres": ("speech",)}
# tasks whose input is the target audio band-limited by resampling to this rate (Hz) and back
BAND_LIMITED_INPUT: dict[str, int] = {"superres": 8000}
TEXT_TASKS = {"asr", "caption", "audio_qa"}
# task -> the condition role whose audio the "copy the input" baseline returns
INPUT_ROLE = {"se": "noisy", "dereverb": "reverberant", "tse": "mixture", "vc": "source", "speech_edit": "original",
              "audio_edit": "original"}
SPLITS = ("train", "valid", "test")


def _resolve(rec: dict, root: Path) -> dict:
    rec = copy.deepcopy(rec)
    for s in rec.get("sources", []):
        if s.get("type") == "file" and not Path(s["source"]).is_absolute():
            s["source"] = str(root / s["source"])
    return rec


def load_corpus_cuts(corpus_dir: str | Path, split: str) -> list:
    """The cuts of ``corpus_dir/manifests/{split}/cuts.jsonl`` as Lhotse MonoCuts, paths made absolute."""
    from lhotse.cut import MonoCut

    root = Path(corpus_dir).resolve()
    path = root / "manifests" / split / "cuts.jsonl"
    if not path.exists():
        raise UnisonoError(f"{path} does not exist; is {root} a corpus made by 'unisono synth' (split {split!r})?")
    cuts = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise UnisonoError(f"{path}:{n} is not valid JSON ({e})") from None
            d["recording"] = _resolve(d["recording"], root)
            for k, v in list(d.get("custom", {}).items()):
                if isinstance(v, dict) and "sources" in v:
                    d["custom"][k] = _resolve(v, root)
            cuts.append(MonoCut.from_dict(d))
    return cuts


def cut_audio(cut) -> np.ndarray:
    """Primary audio of ``cut`` as 16 kHz mono float32 ``[S]``."""
    return at_rate(cut.load_audio(), cut.sampling_rate).astype(np.float32)


def role_audio(cut, role: str) -> np.ndarray | None:
    """Whole condition recording ``cut.custom[role]`` as 16 kHz mono ``[S]`` (``None`` if absent)."""
    rec = (cut.custom or {}).get(role)
    if rec is None:
        return None
    return at_rate(rec.load_audio(), rec.sampling_rate).astype(np.float32)


def _speaker(cut) -> str | None:
    return cut.supervisions[0].speaker if cut.supervisions else None


class _PromptFinder:
    """Another utterance of the same voice: first in the same split, then in the other splits."""

    def __init__(self, corpus_dir: Path, split: str, cuts: list):
        self.corpus_dir, self.split = corpus_dir, split
        self.by_speaker: dict[str, list] = {}
        self._add(cuts)
        self._loaded = {split}

    def _add(self, cuts):
        for c in sorted(cuts, key=lambda c: c.id):
            if c.custom.get("kind") == "speech" and _speaker(c):
                self.by_speaker.setdefault(_speaker(c), []).append(c)

    def find(self, cut):
        spk = _speaker(cut)
        if spk is None:
            return None
        for split in (self.split, *[s for s in SPLITS if s != self.split]):
            if split not in self._loaded:
                self._loaded.add(split)
                if (self.corpus_dir / "manifests" / split / "cuts.jsonl").exists():
                    self._add(load_corpus_cuts(self.corpus_dir, split))
            for c in self.by_speaker.get(spk, []):
                if c.id != cut.id and c.supervisions[0].text != cut.supervisions[0].text:
                    return c
        return None


def _attributes(task: str, cut) -> dict:
    p = cut.custom.get("params", {})
    a = {}
    if "tempo_bpm" in p:
        a["tempo_bpm"] = float(p["tempo_bpm"])
    if "key" in p:
        a["key"], a["mode"] = str(p["key"]), str(p.get("mode", "major"))
    if "instrument" in p:
        a["instrument"] = str(p["instrument"])
    if "event" in p:
        a["event"] = str(p["event"])
    if "count" in p:
        a["n_events"] = int(p["count"])
    elif "events" in p:
        a["n_events"] = len(p["events"])
    return a


def build_items(task: str, cut, prompts: _PromptFinder) -> list[tuple[Reference, object]]:
    """``(reference, cut given to the generator)`` pairs for one cut (several for ``audio_qa``)."""
    sup_text = cut.supervisions[0].text if cut.supervisions else None
    if task == "audio_qa":
        out = []
        for k, (q, a) in enumerate(cut.custom.get("qa", [])):
            c = copy.copy(cut)
            c.custom = {**cut.custom, "qa": [[q, a]]}
            out.append((Reference(item_id=f"{cut.id}.q{k}", task=task, text=str(a)), c))
        return out
    if task == "caption":
        return [(Reference(item_id=cut.id, task=task, text=cut.custom.get("caption") or sup_text), cut)]
    ref = Reference(item_id=cut.id, task=task, audio=cut_audio(cut), text=sup_text, attributes=_attributes(task, cut))
    if task in ("tts", "vc", "speech_edit", "instruct_tts"):
        pc = prompts.find(cut)
        ref.prompt = cut_audio(pc) if pc is not None else None
    elif task == "tse":
        ref.prompt = role_audio(cut, "enrollment")
    if task in INPUT_ROLE:
        ref.condition = role_audio(cut, INPUT_ROLE[task])
    elif task in BAND_LIMITED_INPUT:
        ref.condition = _band_limited(ref.audio, BAND_LIMITED_INPUT[task])
    return [(ref, cut)]


def _band_limited(wav: np.ndarray, rate: int) -> np.ndarray:
    from unisono.tasks import band_limit

    return band_limit(torch.as_tensor(wav, dtype=torch.float32), EVAL_SAMPLE_RATE, rate).numpy()


def to_output(x) -> np.ndarray | str | None:
    """A generation function's return value -> 16 kHz mono ``[S]`` audio, text, or ``None``."""
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, tuple) and len(x) == 2:
        wav, sr = x
        if isinstance(wav, torch.Tensor) and wav.dim() == 3:
            wav = wav[0]
        return at_rate(wav, int(sr)).astype(np.float32)
    raise UnisonoError(f"a generation function must return (wav, sample_rate), a str or None; got {type(x).__name__}")


def reference_system(task: str, cut):
    """The ceiling: the reference itself (for ASR, the recogniser's transcript of the reference audio)."""
    if task == "asr":
        from unisono.eval.metrics.wer import transcribe

        return transcribe(cut_audio(cut), EVAL_SAMPLE_RATE)
    if task == "caption":
        return None  # no offline captioner: the ground-truth caption would score a vacuous 1.0
    if task == "audio_qa":
        return None
    return cut_audio(cut), EVAL_SAMPLE_RATE


def copy_input_system(task: str, cut):
    """The trivial baseline: the task's input audio returned unchanged (``None`` for tasks without one)."""
    if task in BAND_LIMITED_INPUT:
        return _band_limited(cut_audio(cut), BAND_LIMITED_INPUT[task]), EVAL_SAMPLE_RATE
    role = INPUT_ROLE.get(task)
    if role is None:
        return None
    wav = role_audio(cut, role)
    return None if wav is None else (wav, EVAL_SAMPLE_RATE)


class TrainPriorSystem:
    """Baselines that ignore the item: for ``audio_qa`` the most frequent training answer to the same
    question, for ``caption`` the caption of a seeded random training cut of the same kind, for
    ``text_to_sound``/``text_to_music`` the audio of a seeded random training cut of the same kind (real
    audio that ignores the caption: the chance level of the attribute metrics and the real-vs-real FD)."""

    def __init__(self, corpus_dir: str | Path, seed: int = 0, split: str = "train"):
        self.answers: dict[str, Counter] = {}
        self.captions: dict[str, list[str]] = {}
        self.audio_by_kind: dict[str, list] = {}
        self.seed = seed
        for c in load_corpus_cuts(corpus_dir, split):
            if c.custom.get("kind") in ("sound", "scene", "music"):
                self.audio_by_kind.setdefault(c.custom["kind"], []).append(c)
            for q, a in c.custom.get("qa", []):
                self.answers.setdefault(q, Counter())[str(a)] += 1
            if c.custom.get("caption"):
                self.captions.setdefault(c.custom.get("kind", ""), []).append(c.custom["caption"])

    def __call__(self, task: str, cut):
        if task == "audio_qa":
            q = cut.custom["qa"][0][0]
            counts = self.answers.get(q)
            # most frequent, ties broken alphabetically
            return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counts else "yes"
        if task == "caption":
            pool = sorted(self.captions.get(cut.custom.get("kind", ""), []))
            return random.Random(f"{self.seed}:{cut.id}").choice(pool) if pool else ""
        if cuts_from(task) in ("text_to_sound", "text_to_music"):
            pool = sorted(self.audio_by_kind.get(cut.custom.get("kind", ""), []), key=lambda c: c.id)
            if not pool:
                return None
            return cut_audio(random.Random(f"{self.seed}:{cut.id}").choice(pool)), EVAL_SAMPLE_RATE
        return None


# classifier name -> (corpus kind it is trained on, params key of the label)
CLASSIFIERS = {"instrument": ("music", "instrument"), "event": ("sound", "event")}


def train_attribute_classifiers(corpus_dir: str | Path, out_dir: str | Path, names=tuple(CLASSIFIERS),
                                split: str = "train", progress: bool = True) -> dict:
    """Train (or load, when ``out_dir/NAME.safetensors`` exists) each attribute classifier on the reference
    audio of ``split`` and register it for the metrics of this process. Returns name -> classifier info."""
    from tqdm import tqdm

    from unisono.eval.metrics.classifier import AttributeClassifier, register_classifier
    from unisono.eval.metrics.frechet import mel_stats_embedding

    out_dir = Path(out_dir)
    info = {}
    cuts = None
    for name in names:
        if (out_dir / f"{name}.safetensors").exists():
            clf = AttributeClassifier.load(out_dir, name)
        else:
            if cuts is None:
                cuts = load_corpus_cuts(corpus_dir, split)
            kind, key = CLASSIFIERS[name]
            chosen = sorted((c for c in cuts if c.custom.get("kind") == kind and key in c.custom.get("params", {})),
                            key=lambda c: c.id)
            if len({c.custom["params"][key] for c in chosen}) < 2:
                raise UnisonoError(f"cannot train the {name} classifier: split {split} of {corpus_dir} has fewer "
                                   f"than two {key} classes")
            feats = np.stack([mel_stats_embedding(cut_audio(c), EVAL_SAMPLE_RATE)
                              for c in tqdm(chosen, desc=f"{name} classifier features", disable=not progress)])
            clf = AttributeClassifier.fit(feats, [str(c.custom["params"][key]) for c in chosen], weight_decay=1e-3,
                                          info={"trained_on": f"{Path(corpus_dir).name}/{split}", "kind": kind})
            clf.save(out_dir, name)
        register_classifier(name, clf)
        info[name] = {"classes": len(clf.classes), **clf.info}
    return info


def select_cuts(cuts: list, task: str, n: int | None, seed: int) -> list:
    """The cuts that serve ``task``: all, or a seeded sample of ``n``, sorted by id (order-independent)."""
    kinds = TASK_KINDS.get(task, ())
    listed = {task, cuts_from(task)}
    chosen = sorted((c for c in cuts if listed & set(c.custom.get("tasks", [])) or c.custom.get("kind") in kinds),
                    key=lambda c: c.id)
    if n is not None and len(chosen) > n:  # a task served by another's cuts gets the same sample (paired)
        chosen = sorted(random.Random(f"{seed}:{cuts_from(task)}").sample(chosen, n), key=lambda c: c.id)
    return chosen


def _system_serves(name: str, task: str) -> bool:
    """Whether the built-in system ``name`` has an output worth scoring for ``task`` (a plugged-in one: always)."""
    if name == "copy_input":
        return task in INPUT_ROLE or task in BAND_LIMITED_INPUT
    if name == "train_prior":
        return cuts_from(task) in ("caption", "audio_qa", "text_to_sound", "text_to_music")
    if name == "reference":
        return task not in ("caption", "audio_qa")  # no offline captioner or answerer to be the ceiling
    if name == "codec_resynthesis":
        return task not in TEXT_TASKS  # for ASR the recogniser's transcript of the reference is the ceiling
    return True


def evaluate_corpus(
    corpus_dir: str | Path,
    out_dir: str | Path,
    systems: dict[str, GenerateFn],
    split: str = "test",
    tasks: list[str] | None = None,
    n: int | None = None,
    seed: int = 0,
    progress: bool = True,
    command: str | None = None,
    system_ids: dict[str, str] | None = None,
    examples: int = 2,
) -> dict:
    """Score each system's outputs for each task of ``split`` of ``corpus_dir``; write metrics.json + report.md.

    ``systems``: name -> generation function (e.g. ``{"model": fn, "reference": reference_system,
    "copy_input": copy_input_system}``). ``system_ids``: name -> a string identifying the system's
    version (e.g. a checkpoint hash), part of the cache key so a changed model is not served old results.
    ``examples``: for the first N items of each task, every system's output is saved under
    ``out_dir/examples/`` (FLAC + spectrogram PNG) and shown in ``report.html`` with audio players.
    """
    corpus_dir, out_dir = Path(corpus_dir).resolve(), Path(out_dir)
    cuts = load_corpus_cuts(corpus_dir, split)
    available = {t for c in cuts for t in c.custom.get("tasks", [])}
    available = sorted(available | {t for t in TASK_METRICS if cuts_from(t) in available})
    if tasks is None:
        tasks = [t for t in TASK_METRICS if t in available]
    unknown = [t for t in tasks if t not in TASK_METRICS]
    if unknown:
        raise UnisonoError(f"unknown task(s) {', '.join(unknown)}; choose from: {', '.join(TASK_METRICS)}")
    prompts = _PromptFinder(corpus_dir, split, cuts)
    system_ids = system_ids or {}
    result = {"mode": "corpus", "corpus": str(corpus_dir), "split": split, "n": n, "seed": seed, "tasks": {},
              "command": command}
    if (corpus_dir / "stats.json").exists():
        from unisono.fileio import read_json

        st = read_json(corpus_dir / "stats.json")
        result["corpus_stats"] = {k: st[k] for k in ("seed", "hours_requested", "held_out") if k in st}
    metrics_used: set[str] = set()
    example_rows: dict[str, dict] = {}
    needed = sorted({m for t in tasks for m in TASK_METRICS[t] if m in CLASSIFIERS})
    if needed:
        result["classifiers"] = train_attribute_classifiers(corpus_dir, out_dir / "classifiers", needed,
                                                            progress=progress)
    for task in tasks:
        chosen = select_cuts(cuts, task, n, seed)
        if not chosen:
            result["tasks"][task] = {"systems": {}, "note": f"no cut of split {split} serves this task"}
            continue
        pairs = [p for c in chosen for p in build_items(task, c, prompts)]
        metrics = TASK_METRICS[task]
        metrics_used.update(metrics)
        table = {}
        for name, fn in systems.items():
            usable = pairs if _system_serves(name, task) else []
            if not usable:
                continue
            sys_id = system_ids.get(name, name)
            kept: dict = {}  # the example items' outputs, so that they are not generated twice
            example_ids = {ref.item_id for ref, _ in usable[:examples]}

            def make(fn=fn, c=None, item_id=None):
                out = to_output(fn(task, c))
                if item_id in example_ids:
                    kept[item_id] = out
                return out

            items = [(ref, (lambda c=gcut, i=ref.item_id: make(c=c, item_id=i)), fingerprint(sys_id, task, ref.item_id))
                     for ref, gcut in usable]
            skipped: dict[str, str] = {}
            res = score_items(items, metrics, out_dir / "items" / name / task, desc=f"{task}: {name}", progress=progress,
                              skipped=skipped)
            table[name] = aggregate(res)
            if skipped:
                result.setdefault("skipped", {}).setdefault(task, {})[name] = skipped
            for ref, gcut in usable[:examples]:
                if ref.item_id in skipped:
                    continue
                out = kept[ref.item_id] if ref.item_id in kept else to_output(fn(task, gcut))
                if out is not None:
                    ex = example_rows.setdefault(task, {}).setdefault(ref.item_id, {"reference_text": ref.text})
                    ex.setdefault("outputs", []).append(save_example(out_dir, task, ref.item_id, name, out))
        result["tasks"][task] = {"systems": table, "n_cuts": len(chosen), "n_items": len(pairs)}
    from unisono.eval.report import evaluator_versions, write_html_report, write_report

    result["evaluators"] = evaluator_versions(sorted(metrics_used))
    result["examples"] = example_rows
    write_json(out_dir / "metrics.json", result)
    write_report(out_dir / "report.md", result)
    write_html_report(out_dir / "report.html", result)
    return result

