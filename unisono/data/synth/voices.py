"""The espeak-ng voice pool (speakers), voice descriptions, speech and singing synthesis."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import tools

ACCENTS = {
    "en-us": "American",
    "en-us-nyc": "New York",
    "en-gb": "British",
    "en-gb-x-rp": "Received Pronunciation",
    "en-gb-scotland": "Scottish",
    "en-gb-x-gbclan": "Lancashire",
    "en-gb-x-gbcwmd": "West Midlands",
    "en-029": "Caribbean",
}


@dataclass(frozen=True)
class Voice:
    accent: str  # espeak-ng language/accent voice
    variant: str  # espeak-ng variant: m1..m7 (male), f1..f5 (female)
    base_pitch: int  # espeak-ng pitch 0-99 around which utterances vary
    base_speed: int  # words per minute

    @property
    def id(self) -> str:
        return f"{self.accent}+{self.variant}"

    @property
    def gender(self) -> str:
        return "female" if self.variant.startswith("f") else "male"

    @property
    def accent_name(self) -> str:
        return ACCENTS[self.accent]


def _voices(pairs: list[tuple[str, str]], salt: int) -> list[Voice]:
    out = []
    for i, (accent, variant) in enumerate(pairs):
        out.append(Voice(accent, variant, base_pitch=38 + (i * 7 + salt) % 25, base_speed=145 + (i * 11 + salt) % 35))
    return out


# Voices in every split, and voices heard in the test split only.
TRAIN_VOICES = _voices([
    ("en-us", "m1"), ("en-us", "f1"), ("en-us", "m3"), ("en-us", "f3"), ("en-us", "m5"), ("en-us", "m7"),
    ("en-gb", "m2"), ("en-gb", "f2"), ("en-gb", "m4"), ("en-gb", "f4"), ("en-gb", "f5"),
    ("en-gb-scotland", "m1"), ("en-gb-scotland", "f3"),
    ("en-gb-x-rp", "m3"), ("en-gb-x-rp", "f1"), ("en-gb-x-rp", "m6"),
    ("en-gb-x-gbclan", "m2"), ("en-gb-x-gbclan", "f5"),
    ("en-gb-x-gbcwmd", "m4"), ("en-gb-x-gbcwmd", "f2"),
    ("en-029", "m5"), ("en-029", "f4"), ("en-029", "m1"),
    ("en-us-nyc", "m7"), ("en-us-nyc", "f5"), ("en-us-nyc", "m2"),
], salt=0)
HELD_OUT_VOICES = _voices([
    ("en-gb-scotland", "m6"), ("en-029", "f1"), ("en-us-nyc", "f3"), ("en-gb-x-gbcwmd", "m3"),
], salt=5)
ALL_VOICES = TRAIN_VOICES + HELD_OUT_VOICES
VOICES_BY_ID = {v.id: v for v in ALL_VOICES}


def pick_voice(rng: np.random.Generator, split: str, exclude: tuple[str, ...] = ()) -> Voice:
    """A voice for ``split``: the test split draws half of its voices from the held-out pool."""
    pool = TRAIN_VOICES
    if split == "test" and rng.random() < 0.5:
        pool = HELD_OUT_VOICES
    pool = [v for v in pool if v.id not in exclude] or [v for v in ALL_VOICES if v.id not in exclude]
    return pool[int(rng.integers(len(pool)))]


def utterance_params(voice: Voice, rng: np.random.Generator, wide: bool = False) -> dict:
    """Pitch (espeak-ng 0-99) and speed (words/min) for one utterance; ``wide`` spans most of the range."""
    if wide:
        pitch = int(rng.integers(10, 91))
        speed = int(rng.integers(110, 221))
    else:
        pitch = int(np.clip(voice.base_pitch + rng.integers(-8, 9), 0, 99))
        speed = int(np.clip(voice.base_speed + rng.integers(-15, 16), 80, 260))
    return {"voice": voice.id, "accent": voice.accent_name, "gender": voice.gender, "pitch": pitch, "speed": speed}


def pitch_word(pitch: int) -> str:
    return "low-pitched" if pitch < 35 else ("high-pitched" if pitch > 65 else "medium-pitched")


def speed_word(speed: int) -> str:
    return "slow" if speed < 140 else ("fast" if speed > 190 else "moderately paced")


def describe(params: dict, rng: np.random.Generator | None = None) -> str:
    """A natural-language description of a voice from its parameters (used as instruction and caption)."""
    accent = params["accent"]
    article = "an" if accent[0] in "AEIOU" else "a"
    words = [speed_word(params["speed"]), pitch_word(params["pitch"]), params["gender"], "voice"]
    templates = [
        "A {0}, {1} {2} {3} with {4} {5} accent.",
        "Speak in a {0}, {1} {2} {3} with {4} {5} accent.",
        "{4} {5}-accented {2} {3}, {1} and {0}.",
    ]
    idx = 0 if rng is None else int(rng.integers(len(templates)))
    text = templates[idx].format(*words, article, accent)
    return text[:1].upper() + text[1:]


def speak(text: str, params: dict, sample_rate: int) -> np.ndarray:
    """Synthesise ``text`` with the voice and prosody in ``params`` (see :func:`utterance_params`)."""
    return tools.espeak(text, params["voice"], params["pitch"], params["speed"], sample_rate)


def estimate_f0(x: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 500.0) -> float:
    """Median F0 (Hz) of the voiced frames of ``x`` by normalised autocorrelation; 0.0 if unvoiced."""
    frame, hop = int(0.04 * sample_rate), int(0.01 * sample_rate)
    lo, hi = int(sample_rate / fmax), int(sample_rate / fmin)
    f0s = []
    peak = np.max(np.abs(x)) if x.size else 0.0
    for start in range(0, max(0, x.size - frame), hop):
        seg = x[start : start + frame]
        if np.max(np.abs(seg)) < 0.1 * peak:
            continue
        seg = seg - seg.mean()
        ac = np.correlate(seg, seg, mode="full")[frame - 1 :]
        if ac[0] <= 0:
            continue
        ac = ac / ac[0]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5:
            f0s.append(sample_rate / lag)
    return float(np.median(f0s)) if f0s else 0.0


def midi_to_hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69) / 12.0)


def sing(notes: list[tuple[int, float, float, str]], params: dict, sample_rate: int) -> np.ndarray:
    """Sing ``notes`` (midi pitch, start s, end s, syllable) with an espeak-ng voice.

    Each syllable is spoken, shifted to its note's pitch (sox ``pitch``) and stretched to its note's
    duration (sox ``tempo``), then placed at its start time with short fades.
    """
    total = int(round(notes[-1][2] * sample_rate)) + int(0.2 * sample_rate)
    out = np.zeros(total, dtype=np.float32)
    for pitch, start, end, syllable in notes:
        spoken = tools.espeak(syllable, params["voice"], params["pitch"], 110, sample_rate)
        f0 = estimate_f0(spoken, sample_rate) or 120.0
        cents = 1200.0 * np.log2(midi_to_hz(pitch) / f0)
        cents = float(np.clip(cents, -2400, 2400))
        target = max(end - start, 0.08)
        factor = float(np.clip(spoken.size / sample_rate / target, 0.2, 5.0))
        y = tools.sox_effect(spoken, sample_rate, ["pitch", f"{cents:.1f}", "tempo", "-s", f"{factor:.4f}"])
        n = min(y.size, int(round(target * sample_rate)))
        y = y[:n].copy()
        fade = min(int(0.015 * sample_rate), n // 4)
        if fade > 0:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            y[:fade] *= ramp
            y[-fade:] *= ramp[::-1]
        s = int(round(start * sample_rate))
        out[s : s + n] += y[: max(0, min(n, total - s))]
    return out
