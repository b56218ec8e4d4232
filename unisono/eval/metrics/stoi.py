"""Short-time objective intelligibility (STOI) with ``pystoi``: 0 (unintelligible) to 1 (same)."""

from __future__ import annotations

from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate, is_silent, pad_to_same


def stoi(estimate, reference, sample_rate: int, extended: bool = False) -> float:
    """STOI (or extended STOI) of ``estimate`` against the clean ``reference`` (``[S]`` at ``sample_rate`` Hz).

    The shorter signal is zero-padded. A silent reference gives ``nan``.
    """
    from pystoi import stoi as _stoi  # noqa: PLC0415 (optional: pystoi)

    est = at_rate(estimate, sample_rate, name="estimate")
    ref = at_rate(reference, sample_rate, name="reference")
    est, ref = pad_to_same(est, ref)
    if is_silent(ref):
        return float("nan")
    return float(_stoi(ref, est, EVAL_SAMPLE_RATE, extended=extended))
