"""A seeded English sentence generator with word-level structure (for speech editing).

A sentence is a list of :class:`Word` (surface form + word class); :func:`render` turns it into text,
fixing "a"/"an" and capitalisation. Templates combine the word lists of :mod:`.words` into tens of
millions of distinct sentences.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from . import words as W


@dataclass(frozen=True)
class Word:
    text: str
    cls: str | None = None  # "noun", "adj", "color", ... for replaceable words; None for fixed words


# {slot} placeholders; anything else is a fixed word. The final token carries the punctuation.
TEMPLATES = [
    "the {adj} {noun} {vpast} the {noun} {prep} the {place} .",
    "{name} {vpast} a {adj} {noun} {time} .",
    "why did the {noun} {vbase} the {adj} {noun} ?",
    "my {relative} {adv} {vpast} {num} {adj} {nouns} .",
    "please {vbase} the {adj} {noun} {time} .",
    "{name} and {name} {ivpast} {prep} the {adj} {place} .",
    "there are {num} {adj} {nouns} {prep} the {place} .",
    "we should {vbase} the {nouns} {adv} .",
    "the {profession} said that the {noun} was very {adj} .",
    "have you ever seen a {adj} {noun} {iving} {prep} the {place} ?",
    "the {color} {noun} {ivpast} {adv} {prep} the {noun} .",
    "{name} will {vbase} the {adj} {noun} {time} .",
    "every {profession} {v3} a {adj} {noun} .",
    "the {nouns} were {adj} and {adj} .",
    "it is {adj} to {vbase} a {noun} {prep} the {place} .",
    "i think the {profession} {vpast} my {color} {noun} .",
    "a {adj} {noun} and a {adj} {noun} {ivpast} {time} .",
    "where did {name} {vbase} the {num} {nouns} ?",
    "the old {profession} {adv} {vpast} the {adj} {noun} {time} .",
    "{name} found {num} {color} {nouns} {prep} the {place} .",
]


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def fill_slot(slot: str, rng: np.random.Generator) -> list[Word]:
    """Words for one template slot."""
    if slot == "adj":
        return [Word(_pick(rng, W.ADJECTIVES), "adj")]
    if slot == "noun":
        return [Word(_pick(rng, W.NOUNS), "noun")]
    if slot == "nouns":
        return [Word(W.plural(_pick(rng, W.NOUNS)), "nouns")]
    if slot == "color":
        return [Word(_pick(rng, W.COLORS), "color")]
    if slot == "num":
        return [Word(_pick(rng, W.NUMBERS), "num")]
    if slot == "name":
        return [Word(_pick(rng, W.NAMES), "name")]
    if slot == "profession":
        return [Word(_pick(rng, W.PROFESSIONS), "profession")]
    if slot == "relative":
        return [Word(_pick(rng, W.RELATIVES), "relative")]
    if slot == "place":
        return [Word(_pick(rng, W.PLACES), "place")]
    if slot == "prep":
        return [Word(_pick(rng, W.PREPOSITIONS))]
    if slot == "adv":
        return [Word(_pick(rng, W.ADVERBS), "adv")]
    if slot == "time":
        return [Word(t) for t in _pick(rng, W.TIMES).split()]
    if slot in ("vbase", "vpast", "v3"):
        base, past = _pick(rng, W.TRANSITIVE)
        form = {"vbase": base, "vpast": past, "v3": W.third_person(base)}[slot]
        return [Word(form, slot)]
    if slot in ("ivpast", "iving"):
        base, past = _pick(rng, W.INTRANSITIVE)
        return [Word(past if slot == "ivpast" else W.gerund(base), slot)]
    raise KeyError(f"unknown template slot {slot!r}")


def generate(rng: np.random.Generator) -> list[Word]:
    """One random sentence as a list of words (the last one carries the punctuation)."""
    template = _pick(rng, TEMPLATES).split()
    out: list[Word] = []
    for tok in template:
        if tok.startswith("{"):
            out.extend(fill_slot(tok[1:-1], rng))
        elif tok in ".?":
            out[-1] = Word(out[-1].text + tok, out[-1].cls)
        else:
            out.append(Word(tok))
    return out


def _fix_articles(tokens: list[str]) -> list[str]:
    fixed = list(tokens)
    for i, t in enumerate(fixed[:-1]):
        if t.lower() in ("a", "an"):
            nxt = fixed[i + 1].lower()
            vowel = nxt[:1] in "aeiou" and not nxt.startswith(("uni", "use", "eu", "one"))
            want = "an" if vowel else "a"
            fixed[i] = want.capitalize() if t[0].isupper() else want
    return fixed


def render(sentence: list[Word]) -> str:
    """Text of a sentence: articles agreed, first letter and "I" capitalised."""
    tokens = _fix_articles([w.text for w in sentence])
    tokens = ["I" if t == "i" else t for t in tokens]
    text = " ".join(tokens)
    return text[:1].upper() + text[1:]


def split_of(text: str, fractions=(0.8, 0.1, 0.1)) -> str:
    """The split a sentence belongs to, from a hash of its text: sentences never cross splits."""
    h = int.from_bytes(hashlib.sha1(text.lower().encode()).digest()[:8], "big") / 2**64
    if h < fractions[0]:
        return "train"
    if h < fractions[0] + fractions[1]:
        return "valid"
    return "test"


def sentence_for_split(rng: np.random.Generator, split: str) -> list[Word]:
    """A random sentence whose text hashes into ``split``."""
    while True:
        s = generate(rng)
        if split_of(render(s)) == split:
            return s


REPLACEABLE = ("noun", "adj", "color", "name", "adv")


def replace_words(sentence: list[Word], rng: np.random.Generator, n: int, split: str):
    """Replace ``n`` (1 or 2) adjacent-free content words by others of their class.

    Returns ``(new_sentence, positions, pairs)`` where positions are word indices and pairs are
    ``(old, new)`` without punctuation, or None if the result would leave the split (rare; retry).
    """
    candidates = [i for i, w in enumerate(sentence) if w.cls in REPLACEABLE]
    if not candidates:
        return None
    n = min(n, len(candidates))
    positions = sorted(int(p) for p in rng.choice(candidates, size=n, replace=False))
    new = list(sentence)
    pairs = []
    for p in positions:
        old = sentence[p]
        punct = old.text[-1] if old.text[-1] in ".?" else ""
        old_bare = old.text.rstrip(".?")
        pool = {"noun": W.NOUNS, "adj": W.ADJECTIVES, "color": W.COLORS, "name": W.NAMES, "adv": W.ADVERBS}[old.cls]
        repl = old_bare
        while repl == old_bare:
            repl = _pick(rng, pool)
        new[p] = Word(repl + punct, old.cls)
        pairs.append((old_bare, repl))
    if split_of(render(new)) != split:
        return None
    return new, positions, pairs


def vocabulary() -> set[str]:
    """Every surface word the generator can produce (lower case)."""
    vocab: set[str] = set()
    vocab.update(W.NOUNS, (W.plural(n) for n in W.NOUNS), W.ADJECTIVES, W.COLORS, W.NUMBERS, W.ADVERBS)
    vocab.update(n.lower() for n in W.NAMES)
    vocab.update(W.PROFESSIONS, W.RELATIVES, W.PLACES, W.PREPOSITIONS)
    for base, past in W.TRANSITIVE:
        vocab.update((base, past, W.third_person(base)))
    for base, past in W.INTRANSITIVE:
        vocab.update((past, W.gerund(base)))
    for t in W.TIMES:
        vocab.update(t.lower().split())
    for t in TEMPLATES:
        vocab.update(x for x in t.split() if not x.startswith("{") and x not in ".?")
    return vocab
