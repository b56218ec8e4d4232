"""The metric registry: one entry per metric name accepted by ``unisono eval --metric``.

Every metric scores one item: a system's output (16 kHz mono audio ``[S]`` or text) against a
:class:`Reference` (target audio, text, voice prompt, attributes). It returns named float values; an
undefined value is ``nan`` (the report counts it, and averages the others). The models behind a metric
are imported on first use only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from unisono.errors import UnisonoError
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE

Output = "np.ndarray | str"  # 16 kHz mono float audio [S], or text


@dataclass
class Reference:
    """What one output is scored against. Audio is mono float32 ``[S]`` at 16 kHz.

    ``audio``: the target audio; ``text``: transcript (speech), caption (captioning) or answer (QA);
    ``prompt``: a recording of the target voice for speaker similarity (defaults to ``audio``);
    ``condition``: the task's input audio (used by the "copy the input" baseline);
    ``attributes``: ground truth read off the corpus (``tempo_bpm``, ``key``, ``mode``, ``n_events``).
    """

    item_id: str
    task: str = "audio"
    audio: np.ndarray | None = None
    text: str | None = None
    prompt: np.ndarray | None = None
    condition: np.ndarray | None = None
    attributes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    needs: tuple[str, ...]  # Reference fields that must be present
    output: str  # "audio" or "text"
    fn: Callable[[object, Reference], dict[str, float]]
    higher_is_better: dict[str, bool | None]  # per value name (None: a measurement, not a score)


def _need_audio(out, name: str) -> np.ndarray:
    if isinstance(out, str):
        raise UnisonoError(f"metric {name} scores audio, but the system produced text")
    return out


def _wer(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.wer import cer, transcribe, wer  # noqa: PLC0415

    hyp = out if isinstance(out, str) else transcribe(out, EVAL_SAMPLE_RATE)
    return {"wer": wer(hyp, ref.text), "cer": cer(hyp, ref.text), "_transcript": hyp}


def _wer_base(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.wer import cer, recognise, wer  # noqa: PLC0415

    hyp, english = (out, 1.0) if isinstance(out, str) else recognise(out, EVAL_SAMPLE_RATE, "base")
    return {"wer_base": wer(hyp, ref.text), "cer_base": cer(hyp, ref.text), "english_prob": english,
            "_transcript_base": hyp}


def _sim(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.speaker import speaker_similarity  # noqa: PLC0415

    voice = ref.prompt if ref.prompt is not None else ref.audio
    return {"speaker_sim": speaker_similarity(_need_audio(out, "sim"), voice, EVAL_SAMPLE_RATE)}


def _pesq(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.pesq_wb import pesq_wb  # noqa: PLC0415

    return {"pesq_wb": pesq_wb(_need_audio(out, "pesq"), ref.audio, EVAL_SAMPLE_RATE)}


def _stoi(out, ref: Reference) -> dict:
    from unisono.eval.metrics.stoi import stoi  # noqa: PLC0415 (a metric's evaluator loads when the metric is used)

    return {"stoi": stoi(_need_audio(out, "stoi"), ref.audio, EVAL_SAMPLE_RATE)}


def _sisdr(out, ref: Reference) -> dict:
    from unisono.eval.metrics.sisdr import si_sdr  # noqa: PLC0415 (a metric's evaluator loads when the metric is used)

    return {"si_sdr_db": si_sdr(_need_audio(out, "sisdr"), ref.audio)}


def _mel(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.mel_distance import mel_distance  # noqa: PLC0415

    return {"mel_distance": mel_distance(_need_audio(out, "mel"), ref.audio, EVAL_SAMPLE_RATE)}


def _lsd(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.lsd import log_spectral_distance  # noqa: PLC0415

    est = _need_audio(out, "lsd")
    return {"lsd_db": log_spectral_distance(est, ref.audio, EVAL_SAMPLE_RATE),
            "lsd_high_db": log_spectral_distance(est, ref.audio, EVAL_SAMPLE_RATE, low_hz=4000.0)}


def _f0(out, ref: Reference) -> dict:
    from unisono.eval.metrics.f0 import f0_metrics  # noqa: PLC0415 (a metric's evaluator loads when the metric is used)

    m = f0_metrics(_need_audio(out, "f0"), ref.audio, EVAL_SAMPLE_RATE)
    return {"f0_rmse_cents": m["f0_rmse_cents"], "voicing_accuracy": m["voicing_accuracy"]}


def _true_attr(ref: Reference, key: str, from_audio: Callable):
    if key in ref.attributes:
        return ref.attributes[key]
    if ref.audio is None:
        raise UnisonoError(f"item {ref.item_id}: no '{key}' attribute and no reference audio to read it from")
    return from_audio(ref.audio)


def _tempo(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.attributes import estimate_tempo, tempo_correct  # noqa: PLC0415

    est = estimate_tempo(_need_audio(out, "tempo"), EVAL_SAMPLE_RATE)
    true = float(_true_attr(ref, "tempo_bpm", lambda a: estimate_tempo(a, EVAL_SAMPLE_RATE)))
    return {"tempo_acc": float(tempo_correct(est, true)), "tempo_bpm": est}


def _key(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.attributes import canonical_key, estimate_key  # noqa: PLC0415

    est = canonical_key(*estimate_key(_need_audio(out, "key"), EVAL_SAMPLE_RATE))
    if "key" in ref.attributes:
        true = canonical_key(str(ref.attributes["key"]), ref.attributes.get("mode"))
    else:
        true = canonical_key(*_true_attr(ref, "key", lambda a: estimate_key(a, EVAL_SAMPLE_RATE)))
    # the estimator knows major and minor only: the full key is scored for those modes, the tonic for all
    key_acc = float(est == true) if true[1] in ("major", "minor") else math.nan
    return {"key_acc": key_acc, "tonic_acc": float(est[0] == true[0])}


def _events(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.attributes import count_events  # noqa: PLC0415

    est = count_events(_need_audio(out, "events"), EVAL_SAMPLE_RATE)
    true = int(_true_attr(ref, "n_events", lambda a: count_events(a, EVAL_SAMPLE_RATE)))
    return {"event_count_acc": float(est == true), "event_count_abs_err": float(abs(est - true))}


def _fd_embeddings(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.frechet import mel_stats_embedding  # noqa: PLC0415

    return {
        "_emb_out": mel_stats_embedding(_need_audio(out, "fd"), EVAL_SAMPLE_RATE).tolist(),
        "_emb_ref": mel_stats_embedding(ref.audio, EVAL_SAMPLE_RATE).tolist(),
    }


def _classified(attribute: str):
    def fn(out, ref: Reference) -> dict:
        # a metric's evaluator loads when the metric is used
        from unisono.eval.metrics.classifier import get_classifier  # noqa: PLC0415

        true = ref.attributes.get(attribute)
        clf = get_classifier(attribute)
        if true is None or str(true) not in clf.classes:
            return {f"{attribute}_acc": math.nan}  # no label, or a class the classifier never saw (held out)
        return {f"{attribute}_acc": float(clf.predict(_need_audio(out, attribute), EVAL_SAMPLE_RATE) == str(true))}

    return fn


def _text_out(out, name: str) -> str:
    if not isinstance(out, str):
        raise UnisonoError(f"metric {name} scores text, but the system produced audio")
    return out


def _text_sim(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.text_similarity import text_similarity  # noqa: PLC0415

    return {"text_sim": text_similarity(_text_out(out, "text_sim"), ref.text)}


def _bleu(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.bleu import sentence_bleu  # noqa: PLC0415

    return {"bleu": sentence_bleu(_text_out(out, "bleu"), ref.text)}


def _qa(out, ref: Reference) -> dict:
    # a metric's evaluator loads when the metric is used
    from unisono.eval.metrics.qa import answer_correct  # noqa: PLC0415

    return {"qa_acc": float(answer_correct(_text_out(out, "qa"), ref.text))}


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("wer", "word/character error rate of the Whisper tiny.en transcript (or of the text output)",
               ("text",), "any", _wer, {"wer": False, "cer": False}),
        Metric("wer_base", "a second judge: word/character error rate of the Whisper base (multilingual) transcript, "
               "and its probability that the speech is English", ("text",), "any", _wer_base,
               {"wer_base": False, "cer_base": False, "english_prob": True}),
        Metric("sim", "speaker similarity (resemblyzer cosine) to the voice prompt or reference",
               ("audio",), "audio", _sim, {"speaker_sim": True}),
        Metric("pesq", "PESQ wide-band MOS-LQO against the clean reference", ("audio",), "audio", _pesq,
               {"pesq_wb": True}),
        Metric("stoi", "STOI against the clean reference", ("audio",), "audio", _stoi, {"stoi": True}),
        Metric("sisdr", "scale-invariant SDR (dB) against the reference", ("audio",), "audio", _sisdr,
               {"si_sdr_db": True}),
        Metric("mel", "multi-scale log-mel L1 distance to the reference", ("audio",), "audio", _mel,
               {"mel_distance": False}),
        Metric("lsd", "log-spectral distance (dB) to the reference, whole band and 4-8 kHz (the band that "
               "super-resolution from 8 kHz must create)", ("audio",), "audio", _lsd,
               {"lsd_db": False, "lsd_high_db": False}),
        Metric("f0", "F0 RMSE (cents) and voicing accuracy against the reference (torchcrepe tiny)",
               ("audio",), "audio", _f0, {"f0_rmse_cents": False, "voicing_accuracy": True}),
        Metric("tempo", "tempo within 8% of the true tempo (onset autocorrelation)", (), "audio", _tempo,
               {"tempo_acc": True, "tempo_bpm": None}),
        Metric("key", "estimated key (chroma + key profiles) equals the true key (major/minor pieces only); "
               "tonic_acc: the tonic alone, all modes", (), "audio", _key, {"key_acc": True, "tonic_acc": True}),
        Metric("events", "estimated number of sound events equals the true number", (), "audio", _events,
               {"event_count_acc": True, "event_count_abs_err": False}),
        Metric("instrument", "a classifier trained on the corpus's reference audio recognises the requested "
               "instrument (classes unseen in training are not scored)", (), "audio", _classified("instrument"),
               {"instrument_acc": True}),
        Metric("event", "a classifier trained on the corpus's reference audio recognises the requested sound "
               "event class", (), "audio", _classified("event"), {"event_acc": True}),
        Metric("fd", "Frechet distance between mel-statistics embeddings of the output set and the reference set "
               "(set-level; per item only the embeddings are kept)", ("audio",), "audio", _fd_embeddings, {}),
        Metric("text_sim", "sentence-embedding cosine (all-MiniLM-L6-v2) to the reference text", ("text",),
               "text", _text_sim, {"text_sim": True}),
        Metric("bleu", "smoothed sentence BLEU against the reference text", ("text",), "text", _bleu,
               {"bleu": True}),
        Metric("qa", "answer matches the reference answer (normalised exact match)", ("text",), "text", _qa,
               {"qa_acc": True}),
    ]
}


def parse_metric_list(spec: str) -> list[str]:
    """``"wer,sim,pesq"`` -> validated list of metric names."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise UnisonoError(
            f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from: "
            f"{', '.join(METRICS)}"
        )
    return list(dict.fromkeys(names))


def score(metric: str, out, ref: Reference) -> dict:
    """Values of one metric for one item. Missing reference fields are a clear error."""
    m = METRICS[metric]
    for f in m.needs:
        if getattr(ref, f) is None:
            raise UnisonoError(f"metric {metric} needs the reference {f} of item {ref.item_id}, which is missing")
    vals = m.fn(out, ref)
    return {k: (v if isinstance(v, (str, list)) else float(v)) for k, v in vals.items()}


def is_better(value_name: str) -> bool | None:
    for m in METRICS.values():
        if value_name in m.higher_is_better:
            return m.higher_is_better[value_name]
    return None if value_name != "fd" else False


def finite_values(values: list) -> list[float]:
    """The finite numbers among ``values`` (``nan``, ``inf`` and non-numbers dropped)."""
    return [float(x) for x in values if isinstance(x, (int, float)) and math.isfinite(x)]


def finite_mean(values: list[float]) -> tuple[float, int]:
    """Mean of the finite values and how many there were (``nan`` if none)."""
    v = finite_values(values)
    return (float(np.mean(v)) if v else float("nan")), len(v)
