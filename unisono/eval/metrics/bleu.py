"""BLEU (modified n-gram precision with brevity penalty) on normalised, whitespace-tokenised text."""

from __future__ import annotations

import math
from collections import Counter

from unisono.eval.metrics.wer import normalize_text


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(
    hypotheses: list[str], references: list[list[str]] | list[str], max_n: int = 4, smooth: bool = False
) -> float:
    """Corpus BLEU in [0, 1] of ``hypotheses`` against ``references`` (one string or a list per hypothesis).

    Clipped n-gram counts (n = 1..``max_n``) are summed over the corpus; brevity penalty uses, per
    sentence, the reference length closest to the hypothesis length. ``smooth`` adds one to the
    numerator and denominator of every order above 1 (for single sentences).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    matched = [0] * max_n
    total = [0] * max_n
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        h = normalize_text(hyp).split()
        rs = [normalize_text(r).split() for r in refs]
        hyp_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in rs)[1]
        for n in range(1, max_n + 1):
            hc = _ngrams(h, n)
            best: Counter = Counter()
            for r in rs:
                best |= _ngrams(r, n)
            matched[n - 1] += sum(min(c, best[g]) for g, c in hc.items())
            total[n - 1] += max(len(h) - n + 1, 0)
    if hyp_len == 0:
        return 0.0
    log_p = 0.0
    for n in range(max_n):
        m, t = matched[n], total[n]
        if smooth and n > 0:
            m, t = m + 1, t + 1
        if m == 0 or t == 0:
            return 0.0
        log_p += math.log(m / t) / max_n
    bp = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return bp * math.exp(log_p)


def sentence_bleu(hypothesis: str, references: list[str] | str, max_n: int = 4) -> float:
    """Smoothed BLEU in [0, 1] of one sentence (add-one smoothing above unigrams)."""
    return corpus_bleu([hypothesis], [references], max_n=max_n, smooth=True)
