"""Wide-band PESQ (ITU-T P.862.2) with the ``pesq`` package: MOS-LQO, about 1.0 (bad) to 4.64 (same)."""

from __future__ import annotations

import numpy as np

from unisono.errors import MissingToolError
from unisono.eval.metrics.common import EVAL_SAMPLE_RATE, at_rate, is_silent, pad_to_same

DITHER = 1e-5  # amplitude of the seeded dither given to a silent estimate (PESQ cannot score digital silence)


def pesq_wb(estimate, reference, sample_rate: int) -> float:
    """PESQ-WB of ``estimate`` against the clean ``reference`` (both ``[S]`` at ``sample_rate`` Hz).

    Both are resampled to 16 kHz and the shorter is zero-padded. A silent reference gives ``nan``
    (PESQ finds no utterance to compare); a silent estimate is scored with a tiny seeded dither so it
    gets the low score it deserves instead of an error.
    """
    try:
        from pesq import NoUtterancesError  # noqa: PLC0415 (optional: pesq)
        from pesq import pesq as _pesq  # noqa: PLC0415 (optional: pesq)
    except ImportError:
        raise MissingToolError("the Python package pesq", "python3-dev (then: pip install pesq)", "PESQ") from None
    est = at_rate(estimate, sample_rate, name="estimate")
    ref = at_rate(reference, sample_rate, name="reference")
    est, ref = pad_to_same(est, ref)
    if is_silent(ref):
        return float("nan")
    if is_silent(est):
        est = est + DITHER * np.random.default_rng(0).standard_normal(est.size)
    try:
        return float(_pesq(EVAL_SAMPLE_RATE, ref, est, "wb"))
    except NoUtterancesError:
        return float("nan")
