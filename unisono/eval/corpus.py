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
import functools
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from unisono.data.sources import choose_prompt, speaker_of
from unisono.errors import UnisonoError
from unisono.eval.examples import save_example
from unisono.eval.harness import aggregate, fingerprint, score_items
from unisono.eval.metrics import Reference
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate
from unisono.eval.report import evaluator_versions, write_html_report, write_report
from unisono.fileio import read_json, write_json
from unisono.tasks import TaskTemplate, band_limit, load_templates

GenerateFn = Callable[[str, object], object]

def template_of(task, templates: dict | None = None):
    """The :class:`unisono.tasks.TaskTemplate` of ``task`` (a template, or a task name looked up in
    ``templates``, default the built-in ones): every per-task rule of the evaluation (its metrics, the input
    the copy baseline returns, whether the output is speech, whose cuts serve it) is read off the template."""
    if isinstance(task, TaskTemplate):
        return task
    templates = templates if templates is not None else _builtin()
    if task not in templates:
        raise UnisonoError(f"unknown task {task!r}; choose from: {', '.join(templates)}")
    return templates[task]


def _builtin() -> dict:
    if "builtin" not in _TEMPLATES:
        _TEMPLATES["builtin"] = load_templates()
    return _TEMPLATES["builtin"]


_TEMPLATES: dict = {}
SPLITS = ("train", "valid", "test")


def _resolve(rec: dict, root: Path) -> dict:
    rec = copy.deepcopy(rec)
    for s in rec.get("sources", []):
        if s.get("type") == "file" and not Path(s["source"]).is_absolute():
            s["source"] = str(root / s["source"])
    return rec


def load_corpus_cuts(corpus_dir: str | Path, split: str) -> list:
    """The cuts of ``corpus_dir/manifests/{split}/cuts.jsonl`` as Lhotse MonoCuts, paths made absolute."""
    from lhotse.cut import MonoCut  # noqa: PLC0415 (lhotse: not on the GPU image)

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


class PromptFinder:
    """Another utterance of the same voice (:func:`unisono.data.sources.choose_prompt`, saying something else):
    first in the same split, then in the other splits."""

    def __init__(self, corpus_dir: Path, split: str, cuts: list):
        self.corpus_dir, self.split = corpus_dir, split
        self.by_split: dict[str, dict[str, list]] = {}
        self._add(split, cuts)

    def _add(self, split: str, cuts):
        index: dict[str, list] = {}
        for c in cuts:
            if c.custom.get("kind") == "speech" and speaker_of(c):
                index.setdefault(speaker_of(c), []).append(c)
        self.by_split[split] = index

    def find(self, cut):
        spk = speaker_of(cut)
        if spk is None:
            return None
        for split in (self.split, *[s for s in SPLITS if s != self.split]):
            if split not in self.by_split:
                path = self.corpus_dir / "manifests" / split / "cuts.jsonl"
                self._add(split, load_corpus_cuts(self.corpus_dir, split) if path.exists() else [])
            found = choose_prompt(cut, self.by_split[split].get(spk, []), other_text=True)
            if found is not None:
                return found
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


def condition_audio(cut, spec) -> np.ndarray | None:
    """The audio a template condition ``spec`` reads on ``cut`` (its primary audio or a condition recording),
    band-limited as the template says, as 16 kHz mono ``[S]``; None when the cut lacks it."""
    if spec.source_kind == "audio":
        wav = cut_audio(cut)
    elif spec.source_kind == "recording":
        wav = role_audio(cut, spec.source_key)
    else:
        return None
    return None if wav is None else _band_limited(wav, spec.resample)


def build_items(task, cut, prompts: PromptFinder, templates: dict | None = None) -> list[tuple[Reference, object]]:
    """``(reference, cut given to the generator)`` pairs for one cut (one per question of a ``qa`` task)."""
    tpl = template_of(task, templates)
    task = tpl.name
    sup_text = cut.supervisions[0].text if cut.supervisions else None
    if tpl.expand == "qa":
        out = []
        for k, (q, a) in enumerate(cut.custom.get("qa", [])):
            c = copy.copy(cut)
            c.custom = {**cut.custom, "qa": [[q, a]]}
            out.append((Reference(item_id=f"{cut.id}.q{k}", task=task, text=str(a)), c))
        return out
    if tpl.output == "text" and tpl.target.source_kind == "custom":
        return [(Reference(item_id=cut.id, task=task, text=cut.custom.get(tpl.target.source_key) or sup_text), cut)]
    ref = Reference(item_id=cut.id, task=task, audio=cut_audio(cut), text=sup_text, attributes=_attributes(task, cut))
    if tpl.speech:
        pc = prompts.find(cut)
        ref.prompt = cut_audio(pc) if pc is not None else None
    elif "sim" in tpl.metrics:  # the voice to match is a condition recording (an enrollment utterance)
        voice = [c for c in tpl.conditions if c.source_kind == "recording" and c.name != tpl.baseline_input]
        ref.prompt = condition_audio(cut, voice[0]) if voice else None
    if tpl.baseline_input is not None:
        ref.condition = condition_audio(cut, tpl.condition(tpl.baseline_input))
    return [(ref, cut)]


def _band_limited(wav: np.ndarray, rate: int | None) -> np.ndarray:
    if not rate:
        return wav
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


WHISPER_BASE_SYSTEM = "reference_whisper_base"


def reference_system(task: str, cut, recogniser: str = "tiny.en"):
    """The ceiling: the reference itself (for ASR, the recogniser's transcript of the reference audio)."""
    if task == "asr":
        # a metric's evaluator loads when the metric is used
        from unisono.eval.metrics.wer import transcribe  # noqa: PLC0415

        return transcribe(cut_audio(cut), EVAL_SAMPLE_RATE, recogniser)
    if task == "caption":
        return None  # no offline captioner: the ground-truth caption would score a vacuous 1.0
    if task == "audio_qa":
        return None
    return cut_audio(cut), EVAL_SAMPLE_RATE


def copy_input_system(task, cut, templates: dict | None = None):
    """The trivial baseline: the task's input audio (its template's ``baseline_input``) returned unchanged
    (``None`` for tasks without one)."""
    tpl = template_of(task, templates)
    if tpl.baseline_input is None:
        return None
    wav = condition_audio(cut, tpl.condition(tpl.baseline_input))
    return None if wav is None else (wav, EVAL_SAMPLE_RATE)


class TrainPriorSystem:
    """Baselines that ignore the item: for ``audio_qa`` the most frequent training answer to the same
    question, for ``caption`` the caption of a seeded random training cut of the same kind, for
    ``text_to_sound``/``text_to_music`` the audio of a seeded random training cut of the same kind (real
    audio that ignores the caption: the chance level of the attribute metrics and the real-vs-real FD)."""

    def __init__(self, corpus_dir: str | Path, seed: int = 0, split: str = "train", templates: dict | None = None):
        self.templates = templates
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

    def __call__(self, task, cut):
        source = template_of(task, self.templates).serves_cuts_of  # asr_feat & co answer as the task they mirror
        if source == "audio_qa":
            q = cut.custom["qa"][0][0]
            counts = self.answers.get(q)
            # most frequent, ties broken alphabetically
            return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counts else "yes"
        if source == "caption":
            pool = sorted(self.captions.get(cut.custom.get("kind", ""), []))
            return random.Random(f"{self.seed}:{cut.id}").choice(pool) if pool else ""
        if source in ("text_to_sound", "text_to_music"):
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
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.classifier import AttributeClassifier, register_classifier  # noqa: PLC0415

    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.frechet import mel_stats_embedding  # noqa: PLC0415

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


def select_cuts(cuts: list, task, n: int | None, seed: int, templates: dict | None = None) -> list:
    """The cuts that serve ``task`` (:meth:`unisono.tasks.TaskTemplate.serves`): all, or a seeded sample of
    ``n``, sorted by id (order-independent; a task served by another's cuts gets the same sample: paired)."""
    tpl = template_of(task, templates)
    chosen = sorted((c for c in cuts if tpl.serves(c.custom)), key=lambda c: c.id)
    if n is not None and len(chosen) > n:
        chosen = sorted(random.Random(f"{seed}:{tpl.serves_cuts_of}").sample(chosen, n), key=lambda c: c.id)
    return chosen


def system_serves(name: str, tpl) -> bool:
    """Whether the built-in system ``name`` has an output worth scoring for template ``tpl`` (a plugged-in
    one: always)."""
    if name == "copy_input":
        return tpl.baseline_input is not None
    if name == "train_prior":
        return tpl.serves_cuts_of in ("caption", "audio_qa", "text_to_sound", "text_to_music")
    if name == "reference":
        return tpl.output == "audio" or tpl.target.source_kind == "text"  # no offline captioner or answerer
    if name == WHISPER_BASE_SYSTEM:  # the ASR ceiling by the second judge
        return tpl.output == "text" and "wer" in tpl.metrics
    if name == "deepfilternet3":  # an enhancement baseline: noisy input speech, scored by PESQ
        return tpl.baseline_input is not None and "pesq" in tpl.metrics
    if name == "codec_resynthesis":
        return tpl.output == "audio"  # for ASR the recogniser's transcript of the reference is the ceiling
    return True


def _score_system(name: str, fn, task: str, usable: list, metrics: list[str], out_dir: Path, sys_id: str,
                  examples: int, progress: bool, result: dict, example_rows: dict) -> dict:
    """One system's aggregated values on one task's items; its skipped items go into ``result``, its first
    ``examples`` outputs into ``example_rows`` (saved under ``out_dir/examples``)."""
    kept: dict = {}  # the example items' outputs, so that they are not generated twice
    example_ids = {ref.item_id for ref, _ in usable[:examples]}

    def make(c, item_id):
        out = to_output(fn(task, c))
        if item_id in example_ids:
            kept[item_id] = out
        return out

    items = [(ref, functools.partial(make, gcut, ref.item_id), fingerprint(sys_id, task, ref.item_id))
             for ref, gcut in usable]
    skipped: dict[str, str] = {}
    res = score_items(items, metrics, out_dir / "items" / name / task, desc=f"{task}: {name}", progress=progress,
                      skipped=skipped)
    if skipped:
        result.setdefault("skipped", {}).setdefault(task, {})[name] = skipped
    for ref, gcut in usable[:examples]:
        if ref.item_id in skipped:
            continue
        out = kept[ref.item_id] if ref.item_id in kept else to_output(fn(task, gcut))
        if out is not None:
            ex = example_rows.setdefault(task, {}).setdefault(ref.item_id, {"reference_text": ref.text})
            ex.setdefault("outputs", []).append(save_example(out_dir, task, ref.item_id, name, out))
    return aggregate(res)


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
    templates: dict | None = None,
    second_judges: dict[str, str] | None = None,
) -> dict:
    """Score each system's outputs for each task of ``split`` of ``corpus_dir``; write metrics.json + report.md.
    ``second_judges`` (``{"wer": "wer_base"}``): a task with audio output scored by the first metric is scored by
    the second too (a text output, e.g. ASR's, is scored as it is: its second judge is a system,
    :data:`WHISPER_BASE_SYSTEM`).

    ``systems``: name -> generation function (e.g. ``{"model": fn, "reference": reference_system,
    "copy_input": copy_input_system}``). ``system_ids``: name -> a string identifying the system's
    version (e.g. a checkpoint hash), part of the cache key so a changed model is not served old results.
    ``examples``: for the first N items of each task, every system's output is saved under
    ``out_dir/examples/`` (FLAC + spectrogram PNG) and shown in ``report.html`` with audio players.
    ``templates``: the tasks' templates (a checkpoint's own; default the built-in ones): each task's metrics
    and baselines come from its template.
    """
    corpus_dir, out_dir = Path(corpus_dir).resolve(), Path(out_dir)
    cuts = load_corpus_cuts(corpus_dir, split)
    templates = templates if templates is not None else _builtin()
    scored = {n: t for n, t in templates.items() if t.metrics}
    if tasks is None:
        tasks = [n for n, t in scored.items() if any(t.serves(c.custom) for c in cuts)]
    unknown = [t for t in tasks if t not in scored]
    if unknown:
        raise UnisonoError(f"unknown task(s) {', '.join(unknown)}; choose from: {', '.join(scored)}")
    prompts = PromptFinder(corpus_dir, split, cuts)
    system_ids = system_ids or {}
    result = {"mode": "corpus", "corpus": str(corpus_dir), "split": split, "n": n, "seed": seed, "tasks": {},
              "command": command}
    if (corpus_dir / "stats.json").exists():
        st = read_json(corpus_dir / "stats.json")
        result["corpus_stats"] = {k: st[k] for k in ("seed", "hours_requested", "held_out") if k in st}
    metrics_used: set[str] = set()
    example_rows: dict[str, dict] = {}
    # the attribute classifiers learn from the corpus's train split; a set without one (real recordings) skips them
    has_train = (corpus_dir / "manifests" / "train" / "cuts.jsonl").exists()
    needed = sorted({m for t in tasks for m in scored[t].metrics if m in CLASSIFIERS}) if has_train else []
    if not has_train:
        result["note"] = "no train split: the classifier metrics (" + ", ".join(sorted(CLASSIFIERS)) + ") are skipped"
    if needed:
        result["classifiers"] = train_attribute_classifiers(corpus_dir, out_dir / "classifiers", needed,
                                                            progress=progress)
    for task in tasks:
        tpl = scored[task]
        chosen = select_cuts(cuts, tpl, n, seed)
        if not chosen:
            result["tasks"][task] = {"systems": {}, "note": f"no cut of split {split} serves this task"}
            continue
        pairs = [p for c in chosen for p in build_items(tpl, c, prompts)]
        metrics = [m for m in tpl.metrics if has_train or m not in CLASSIFIERS]
        if tpl.output == "audio":  # a text output is scored as it is: the second judge is its own system row
            metrics += [extra for m, extra in (second_judges or {}).items() if m in metrics and extra not in metrics]
        metrics_used.update(metrics)
        table = {}
        for name, fn in systems.items():
            usable = pairs if system_serves(name, tpl) else []
            if usable:
                table[name] = _score_system(name, fn, task, usable, metrics, out_dir, system_ids.get(name, name),
                                            examples, progress, result, example_rows)
        result["tasks"][task] = {"systems": table, "n_cuts": len(chosen), "n_items": len(pairs)}

    result["evaluators"] = evaluator_versions(sorted(metrics_used))
    result["examples"] = example_rows
    write_json(out_dir / "metrics.json", result)
    write_report(out_dir / "report.md", result)
    write_html_report(out_dir / "report.html", result)
    return result

