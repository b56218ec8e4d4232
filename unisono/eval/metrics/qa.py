"""Question answering accuracy: normalised exact match (articles dropped, number words as digits)."""

from __future__ import annotations

from unisono.eval.metrics.wer import normalize_text

_NUMBERS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
}
_DROP = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """Canonical form of a short answer: normalised text, no articles, number words 0-20 as digits."""
    words = [_NUMBERS.get(w, w) for w in normalize_text(text).split() if w not in _DROP]
    return " ".join(words)


def answer_correct(prediction: str, answer: str) -> bool:
    """True when the normalised prediction equals the normalised answer, or is it followed by more words
    only if the answer is ``yes``/``no`` (``"yes, it is"`` counts as ``"yes"``)."""
    p, a = normalize_answer(prediction), normalize_answer(answer)
    if p == a:
        return True
    return a in ("yes", "no") and p.split()[:1] == [a]


def qa_accuracy(predictions: list[str], answers: list[str]) -> float:
    """Share of predictions judged correct by :func:`answer_correct`."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions but {len(answers)} answers")
    if not answers:
        return float("nan")
    return sum(answer_correct(p, a) for p, a in zip(predictions, answers)) / len(answers)
