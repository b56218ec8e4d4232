"""Scale-invariant signal-to-distortion ratio (SI-SDR) in dB, higher is better."""

from __future__ import annotations

import math

import numpy as np

from unisono.eval.metrics.common import mono_np, pad_to_same


def si_sdr(estimate, reference, eps: float = 1e-12) -> float:
    """SI-SDR of ``estimate`` against ``reference`` (both ``[S]`` at one sample rate), in dB.

    Both signals are made zero-mean; the shorter is zero-padded. The reference is scaled by the
    least-squares factor, so the score ignores gain. Silent estimate or reference -> ``-inf`` / ``nan``.
    """
    est, ref = pad_to_same(mono_np(estimate, "estimate"), mono_np(reference, "reference"))
    est = est - est.mean()
    ref = ref - ref.mean()
    ref_energy = float(np.dot(ref, ref))
    if ref_energy < eps:
        return float("nan")  # undefined against a silent reference
    alpha = float(np.dot(est, ref)) / ref_energy
    target = alpha * ref
    noise = est - target
    t, n = float(np.dot(target, target)), float(np.dot(noise, noise))
    if t < eps:
        return float("-inf")
    if n < eps * t:
        n = eps * t  # identical signals: cap at +120 dB instead of +inf
    return 10.0 * math.log10(t / n)
