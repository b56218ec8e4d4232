"""The evaluation engine: score items with a list of metrics, cache every item's values, aggregate.

Two front ends share it:
- :func:`evaluate_dirs`: audio files made by any system, paired by file name with reference files;
- :func:`evaluate_corpus` (in :mod:`unisono.eval.corpus`): a generation function over a corpus split.

Resuming: each item's values are written atomically to ``OUT/items/<system>/<item>.json`` together with
a fingerprint of its inputs; a rerun reuses every value whose fingerprint matches and computes only what
is missing (new items, new metrics, changed files). Results do not depend on the order of items.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from unisono.audio import AUDIO_EXTENSIONS, load
from unisono.errors import UnisonoError
from unisono.eval.examples import save_example
from unisono.eval.metrics import METRICS, Reference, finite_values, score
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE
from unisono.eval.report import evaluator_versions, write_html_report, write_report
from unisono.fileio import read_json, write_json

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def fingerprint(*parts) -> str:
    """Stable short hash of arrays, strings and numbers (the identity of an item's inputs)."""
    h = hashlib.sha1()
    for p in parts:
        if p is None:
            h.update(b"<none>")
        elif isinstance(p, np.ndarray):
            h.update(str(p.shape).encode())
            h.update(np.ascontiguousarray(p, dtype=np.float32).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


@dataclass
class ItemResult:
    item_id: str
    values: dict  # value name -> float (or str for extras such as "_transcript")


class ItemCache:
    """Per-item JSON files under ``root``; each stores ``{"fingerprint", "metrics": {name: values}}``."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None

    def _path(self, item_id: str) -> Path:
        return self.root / (_SAFE.sub("_", item_id) + ".json")

    def get(self, item_id: str, fp: str) -> dict:
        if self.root is None:
            return {}
        p = self._path(item_id)
        if not p.exists():
            return {}
        try:
            data = read_json(p)
        except UnisonoError:
            return {}  # a corrupt cache entry is recomputed
        return data.get("metrics", {}) if data.get("fingerprint") == fp else {}

    def put(self, item_id: str, fp: str, metrics: dict) -> None:
        if self.root is not None:
            write_json(self._path(item_id), {"item_id": item_id, "fingerprint": fp, "metrics": metrics})


def score_items(
    items: Iterable[tuple[Reference, Callable[[], object], str]],
    metrics: list[str],
    cache_dir: Path | None = None,
    desc: str = "scoring",
    total: int | None = None,
    progress: bool = True,
    skipped: dict | None = None,
) -> list[ItemResult]:
    """Score ``items`` = ``(reference, get_output, output_fingerprint)`` with the per-item ``metrics``.

    ``get_output()`` returns 16 kHz mono audio ``[S]`` or text; it is called only when some metric of the
    item is not cached yet (so a resumed run does not regenerate finished items); an output of ``None``
    (the system cannot do this item) leaves the item out. An item whose output cannot be made or scored
    (a corrupt, empty or over-long file, a failed generation) is left out too, with its reason in
    ``skipped`` (``{item_id: reason}``); the run goes on.
    """
    cache = ItemCache(cache_dir)
    per_item = [m for m in metrics if m in METRICS]
    results = []
    for ref, get_output, out_fp in tqdm(list(items) if total is None else items, desc=desc, total=total,
                                        disable=not progress, unit="item"):
        fp = fingerprint(out_fp, ref.audio, ref.text, ref.prompt, ref.attributes)
        done = cache.get(ref.item_id, fp)
        todo = [m for m in per_item if m not in done]
        if todo:
            try:
                out = get_output()
                if out is None:
                    continue
                if not isinstance(out, str) and np.asarray(out).size == 0:
                    raise UnisonoError("the output is empty (0 samples)")
                for m in todo:
                    done[m] = score(m, out, ref)
            except (UnisonoError, ValueError, RuntimeError) as e:
                if skipped is None:
                    raise
                skipped[ref.item_id] = str(e).splitlines()[0] if str(e) else type(e).__name__
                continue
            cache.put(ref.item_id, fp, done)
        values: dict = {}
        for m in per_item:
            values.update(done[m])
        results.append(ItemResult(ref.item_id, values))
    return results


FD_MIN_ITEMS = 3  # the set-level Frechet distance needs this many items with embeddings (else its mean is nan)


def aggregate(results: list[ItemResult]) -> dict:
    """``{value_name: {"mean": float, "median": float, "n": valid count, "n_items": items}}`` over the items
    (nan ignored). The median is there because a few items can carry a mean: a recogniser that loops on
    unintelligible speech gives one item a WER of 14-20 (the shipped model's instructed TTS, docs/results.md).

    The set-level Frechet distance (``fd``) is computed here from the per-item embeddings.
    """
    names = sorted({k for r in results for k in r.values if not k.startswith("_")})
    out = {}
    for k in names:
        v = finite_values([r.values.get(k, math.nan) for r in results])
        out[k] = {"mean": float(np.mean(v)) if v else math.nan, "median": float(np.median(v)) if v else math.nan,
                  "n": len(v), "n_items": len(results)}
    with_emb = [r for r in results if "_emb_out" in r.values]
    if with_emb:
        out["fd"] = {"mean": math.nan, "n": 0, "n_items": len(results)}
        if len(with_emb) >= FD_MIN_ITEMS:
            # a metric's evaluator loads when the metric is used
            from unisono.eval.metrics.frechet import frechet_distance  # noqa: PLC0415

            a = np.array([r.values["_emb_out"] for r in with_emb])
            b = np.array([r.values["_emb_ref"] for r in with_emb])
            out["fd"] = {"mean": frechet_distance(a, b), "n": len(with_emb), "n_items": len(results)}
    return out


# ---------------------------------------------------------------------------------------------------
# audio directories


def _audio_files(d: Path) -> dict[str, Path]:
    if not d.is_dir():
        raise UnisonoError(f"{d} is not a directory; pass a folder of {', '.join(AUDIO_EXTENSIONS)} files")
    files: dict[str, Path] = {}
    for p in sorted(d.iterdir()):
        if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."):
            if p.stem in files:
                raise UnisonoError(f"{d} has two audio files named {p.stem} ({files[p.stem].name}, {p.name}); keep one")
            files[p.stem] = p
    return files


def load_texts(path: Path | None, ref_files: dict[str, Path]) -> dict[str, str]:
    """Reference texts by item id: from ``path`` (JSON object ``{id: text}``, JSON list or JSONL of
    ``{"id", "text"}``), else from ``<reference stem>.txt`` files beside the reference audio."""
    texts: dict[str, str] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise UnisonoError(f"text manifest {path} does not exist")
        raw = path.read_text(encoding="utf-8")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            try:
                data = [json.loads(line) for line in raw.splitlines() if line.strip()]
            except json.JSONDecodeError as e:
                raise UnisonoError(f"{path} is neither JSON nor JSONL ({e})") from None
        if isinstance(data, dict):
            texts = {str(k): str(v) for k, v in data.items()}
        elif isinstance(data, list) and all(isinstance(r, dict) and "id" in r and "text" in r for r in data):
            texts = {str(r["id"]): str(r["text"]) for r in data}
        else:
            raise UnisonoError(f"{path}: expected {{id: text}} or rows of {{\"id\": ..., \"text\": ...}}")
    else:
        for stem, p in ref_files.items():
            t = p.with_suffix(".txt")
            if t.exists():
                texts[stem] = t.read_text(encoding="utf-8").strip()
    return texts


MAX_EVAL_SECONDS = 120.0  # a longer output or reference is skipped (with its reason), not scored


def _load16k(p: Path) -> np.ndarray:
    import soundfile as sf  # noqa: PLC0415 (soundfile: not on the GPU image)

    try:
        seconds = sf.info(str(p)).duration
    except Exception:  # unreadable: load() below says why in one line
        seconds = 0.0
    if seconds > MAX_EVAL_SECONDS:
        raise UnisonoError(f"{p.name} is {seconds:.1f} s long; the evaluation takes at most {MAX_EVAL_SECONDS:g} s")
    wav, _ = load(p, sample_rate=EVAL_SAMPLE_RATE, mono=True)
    if wav.shape[-1] == 0:
        raise UnisonoError(f"{p.name} is empty (0 samples)")
    return wav[0].numpy()


def evaluate_dirs(
    audio_dir: str | Path,
    ref_dir: str | Path,
    metrics: list[str],
    out_dir: str | Path,
    text_path: str | Path | None = None,
    ceiling: bool = True,
    progress: bool = True,
    examples: int = 2,
) -> dict:
    """Score every audio file of ``audio_dir`` against the file of the same name in ``ref_dir``.

    Writes ``out_dir/metrics.json``, ``out_dir/report.md`` and ``out_dir/report.html`` (with audio players
    and spectrograms of the first ``examples`` pairs); returns the metrics dict. With
    ``ceiling``, text metrics (WER) are also computed on the reference audio itself: the best a system
    can reach with this recogniser.
    """
    audio_dir, ref_dir, out_dir = Path(audio_dir), Path(ref_dir), Path(out_dir)
    gen, refs = _audio_files(audio_dir), _audio_files(ref_dir)
    ids = sorted(set(gen) & set(refs))
    if not ids:
        raise UnisonoError(
            f"no file of {audio_dir} has a reference of the same name in {ref_dir} "
            f"({len(gen)} generated, {len(refs)} reference files); name each output after its reference"
        )
    unmatched = sorted(set(gen) - set(refs))
    texts = load_texts(Path(text_path) if text_path else None, refs)
    if "wer" in metrics:
        missing = [i for i in ids if i not in texts]
        if missing:
            raise UnisonoError(
                f"WER needs a reference text for every item; {len(missing)} have none (first: {missing[0]}); "
                "pass --text MANIFEST or put <name>.txt beside each reference file"
            )
    ref_cache: dict[str, np.ndarray] = {}

    def ref_audio(i: str) -> np.ndarray:
        if i not in ref_cache:
            ref_cache[i] = _load16k(refs[i])
        return ref_cache[i]

    skipped: dict[str, dict[str, str]] = {"generated": {}, "reference": {}}

    def make_items(source: dict[str, Path], use_ref_as_output: bool, system: str):
        for i in ids:
            try:
                r = Reference(item_id=i, audio=ref_audio(i), text=texts.get(i))
            except UnisonoError as e:
                skipped[system][i] = f"reference: {e}"
                continue
            p = refs[i] if use_ref_as_output else source[i]
            yield r, (lambda p=p: _load16k(p)), _file_digest(p)

    systems = {"generated": score_items(make_items(gen, False, "generated"), metrics, out_dir / "items" / "generated",
                                        desc="scoring generated", total=len(ids), progress=progress,
                                        skipped=skipped["generated"])}
    text_metrics = [m for m in metrics if m == "wer"]
    if ceiling and text_metrics:
        systems["reference"] = score_items(make_items(refs, True, "reference"), text_metrics,
                                           out_dir / "items" / "reference", desc="scoring references", total=len(ids),
                                           progress=progress, skipped=skipped["reference"])
    table = {name: aggregate(res) for name, res in systems.items()}
    result = {
        "mode": "audio-dir",
        "audio_dir": str(audio_dir),
        "ref_dir": str(ref_dir),
        "metrics": metrics,
        "n_items": len(ids),
        "unmatched_outputs": unmatched,
        "skipped": {k: v for k, v in skipped.items() if v},
        "tasks": {"audio": {"systems": table}},
        "items": {name: {r.item_id: _public(r.values) for r in res} for name, res in systems.items()},
        "evaluators": evaluator_versions(metrics),
    }

    good = [i for i in ids if i not in skipped["generated"]]
    result["examples"] = {
        "audio": {
            i: {
                "reference_text": texts.get(i),
                "outputs": [
                    save_example(out_dir, "audio", i, "generated", _load16k(gen[i])),
                    save_example(out_dir, "audio", i, "reference", ref_audio(i)),
                ],
            }
            for i in good[:examples]
        }
    }
    write_json(out_dir / "metrics.json", result)
    write_report(out_dir / "report.md", result)
    write_html_report(out_dir / "report.html", result)
    return result


def _public(values: dict) -> dict:
    """Per-item values for metrics.json: embeddings left out, transcripts kept."""
    return {k: v for k, v in values.items() if not k.startswith("_emb")}


def _file_digest(p: Path) -> str:
    h = hashlib.sha1()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


__all__ = ["ItemResult", "aggregate", "evaluate_dirs", "fingerprint", "load_texts", "score_items"]
