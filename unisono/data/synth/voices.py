"""The voice pool (speakers) of every speech engine, voice descriptions, speech and singing synthesis.

espeak-ng gives 30 voices (8 accents x variants); the natural engines of :mod:`.engines` add Kokoro (25 blends of
its 5 style packs), Piper (1 voice), Festival (3) and Flite (4). Which engines a corpus uses, and in what
shares, is its engine mix (:func:`set_engine_mix`): each speaker is drawn by engine first, then by voice.
The test split hears held-out voices of every engine that has more than one (4 espeak-ng voices, 4 Kokoro
blends, one Festival and one Flite voice); Piper's one voice is in every split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unisono.errors import UnisonoError

from . import engines, tools

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

    @property
    def engine(self) -> str:
        return "espeak"

    @property
    def lang(self) -> str:
        """The espeak-ng language of this voice's phone tokens."""
        return "en-us" if self.accent.startswith("en-us") else self.accent


@dataclass(frozen=True)
class EngineVoice:
    """A voice of a natural engine (:mod:`.engines`): ``name`` is what the engine needs (a Kokoro blend
    ``timbre/prosody``, a Festival or Flite voice)."""

    engine: str
    name: str
    gender: str
    accent_name: str
    lang: str = "en-us"  # espeak-ng language of the phone tokens of its text

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"


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
ESPEAK_VOICES = TRAIN_VOICES + HELD_OUT_VOICES


def _kokoro_voices() -> list[EngineVoice]:
    return [EngineVoice("kokoro", f"{t}/{p}", "male" if t.startswith("jm") else "female", "Japanese")
            for t in engines.KOKORO_PACKS for p in engines.KOKORO_PACKS]


_KOKORO_HELD_OUT = {"kokoro:jf_nezumi/jm_kumo", "kokoro:jm_kumo/jf_tebukuro", "kokoro:jf_gongitsune/jf_alpha",
                    "kokoro:jf_tebukuro/jf_nezumi"}
NATURAL_VOICES = {
    "kokoro": _kokoro_voices(),
    "piper": [EngineVoice("piper", "joe", "male", "American")],
    "festival": [EngineVoice("festival", "kal", "male", "American"), EngineVoice("festival", "ked", "male", "American"),
                 EngineVoice("festival", "slt", "female", "American")],
    "flite": [EngineVoice("flite", "kal16", "male", "American"), EngineVoice("flite", "rms", "male", "American"),
              EngineVoice("flite", "slt", "female", "American"),
              EngineVoice("flite", "awb", "male", "Scottish", lang="en-gb-scotland")],
}
_NATURAL_HELD_OUT = _KOKORO_HELD_OUT | {"festival:ked", "flite:awb"}
HELD_OUT_BY_ENGINE = {"espeak": HELD_OUT_VOICES,
                      **{e: [v for v in vs if v.id in _NATURAL_HELD_OUT] for e, vs in NATURAL_VOICES.items()}}
TRAIN_BY_ENGINE = {"espeak": TRAIN_VOICES,
                   **{e: [v for v in vs if v.id not in _NATURAL_HELD_OUT] for e, vs in NATURAL_VOICES.items()}}
ALL_VOICES = ESPEAK_VOICES + [v for vs in NATURAL_VOICES.values() for v in vs]
VOICES_BY_ID = {v.id: v for v in ALL_VOICES}
ENGINES = ("espeak", *NATURAL_VOICES)

# The default mix: natural voices are a third of the speakers; Kokoro (3x real time on one core) is the slow one.
DEFAULT_ENGINE_MIX = {"espeak": 0.5, "kokoro": 0.2, "piper": 0.15, "festival": 0.05, "flite": 0.1}
ESPEAK_ONLY = {"espeak": 1.0}
_mix: dict[str, float] = dict(ESPEAK_ONLY)


def parse_engine_mix(spec: str) -> dict[str, float]:
    """``"espeak=0.5,kokoro=0.3"`` (or ``"espeak"``: that engine alone) -> weights summing to 1."""
    mix: dict[str, float] = {}
    for part in filter(None, (x.strip() for x in spec.split(","))):
        name, _, w = part.partition("=")
        if name not in ENGINES:
            raise UnisonoError(f"--engines: unknown engine {name!r}; known: {', '.join(ENGINES)}")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise UnisonoError(f"--engines: {part!r} needs a number after '=' (e.g. kokoro=0.2)") from None
        if weight < 0:
            raise UnisonoError(f"--engines: the weight of {name} is negative")
        mix[name] = mix.get(name, 0.0) + weight
    return normalise_mix(mix)


def normalise_mix(mix: dict[str, float]) -> dict[str, float]:
    mix = {e: float(w) for e, w in mix.items() if w > 0}
    if not mix:
        raise UnisonoError("the engine mix is empty; give at least one engine a positive weight (e.g. espeak=1)")
    unknown = set(mix) - set(ENGINES)
    if unknown:
        raise UnisonoError(f"unknown speech engines {sorted(unknown)}; known: {', '.join(ENGINES)}")
    total = sum(mix.values())
    return {e: round(mix[e] / total, 6) for e in ENGINES if e in mix}


def usable_mix(mix: dict[str, float]) -> tuple[dict[str, float], dict[str, str]]:
    """``mix`` without the engines that cannot run here, renormalised, and ``{engine: why}`` for those left out."""
    missing = {e: why for e in mix if (why := engines.unavailable(e))}
    if "espeak" in missing:
        raise UnisonoError(missing["espeak"])
    return normalise_mix({e: w for e, w in mix.items() if e not in missing} or ESPEAK_ONLY), missing


def set_engine_mix(mix: dict[str, float]) -> None:
    """The engine shares :func:`pick_voice` draws from (worker processes forked after this call inherit it)."""
    global _mix
    _mix = normalise_mix(mix)


def engine_mix() -> dict[str, float]:
    return dict(_mix)


def pick_voice(rng: np.random.Generator, split: str, exclude: tuple[str, ...] = (),
               engines_allowed: tuple[str, ...] | None = None) -> Voice | EngineVoice:
    """A voice for ``split``: an engine drawn by the engine mix (no draw when only espeak-ng is in it, so
    espeak-only corpora stay what they were), then a voice; the test split draws half of its voices from the
    engine's held-out pool. ``engines_allowed`` limits the engines (singing is espeak-ng's alone)."""
    mix = {e: w for e, w in _mix.items() if engines_allowed is None or e in engines_allowed} or {"espeak": 1.0}
    engine = "espeak"
    if len(mix) > 1 or "espeak" not in mix:
        names = list(mix)
        weights = np.array([mix[e] for e in names], dtype=np.float64)
        engine = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    train, held = TRAIN_BY_ENGINE[engine], HELD_OUT_BY_ENGINE[engine]
    pool = train
    if split == "test" and held and rng.random() < 0.5:
        pool = held
    # a voice left after ``exclude``, never a held-out one outside the test split: the engine's pool, then its
    # voices allowed in the split, then espeak-ng's (an engine with one voice cannot give a second speaker)
    allowed = train + held if split == "test" else train
    espeak = ESPEAK_VOICES if split == "test" else TRAIN_VOICES
    pool = [v for v in pool if v.id not in exclude] or [v for v in allowed if v.id not in exclude] or \
        [v for v in espeak if v.id not in exclude]
    return pool[int(rng.integers(len(pool)))]


def utterance_params(voice: Voice | EngineVoice, rng: np.random.Generator, wide: bool = False) -> dict:
    """Controls for one utterance; ``wide`` spans most of their range. espeak-ng: pitch (0-99) and speed
    (words/min). Natural engines: their own controls; the ``pitch`` (same 0-99 scale) and ``speed`` (words/min)
    that the descriptions use are measured on the audio by :func:`speak`."""
    if isinstance(voice, EngineVoice):
        base = {"voice": voice.id, "engine": voice.engine, "accent": voice.accent_name, "gender": voice.gender}
        lo, hi = (0.8, 1.3) if wide else (0.9, 1.15)
        if voice.engine == "kokoro":
            return {**base, "rate": round(float(rng.uniform(1 / hi, 1 / lo)), 3)}
        if voice.engine == "piper":
            return {**base, "length_scale": round(float(rng.uniform(lo, hi)), 3),
                    "noise_scale": round(float(rng.uniform(0.45, 0.8)), 3),
                    "noise_w": round(float(rng.uniform(0.6, 0.95)), 3), "seed": int(rng.integers(2**31))}
        if voice.engine == "festival":
            return {**base, "stretch": round(float(rng.uniform(lo, hi)), 3)}
        f0 = (95.0, 135.0) if voice.gender == "male" else (165.0, 230.0)
        if wide:
            f0 = (f0[0] * 0.8, f0[1] * 1.25)
        return {**base, "stretch": round(float(rng.uniform(lo, hi)), 3),
                "f0_mean": round(float(rng.uniform(*f0)), 1)}
    if wide:
        pitch = int(rng.integers(10, 91))
        speed = int(rng.integers(110, 221))
    else:
        pitch = int(np.clip(voice.base_pitch + rng.integers(-8, 9), 0, 99))
        speed = int(np.clip(voice.base_speed + rng.integers(-15, 16), 80, 260))
    return {"voice": voice.id, "engine": "espeak", "accent": voice.accent_name, "gender": voice.gender, "pitch": pitch,
            "speed": speed}


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
    """Synthesise ``text`` with the voice and prosody in ``params`` (see :func:`utterance_params`). For a natural
    engine, the first call also writes the ``pitch`` and ``speed`` a listener hears into ``params``."""
    engine = params.get("engine", "espeak")
    if engine == "espeak":
        return tools.espeak(text, params["voice"], params["pitch"], params["speed"], sample_rate)
    name = params["voice"].split(":", 1)[1]
    if engine == "kokoro":
        timbre, prosody = name.split("/")
        x = engines.kokoro(text, timbre, prosody, params["rate"], sample_rate)
    elif engine == "piper":
        x = engines.piper(text, params["length_scale"], params["noise_scale"], params["noise_w"], sample_rate,
                          params["seed"])
    elif engine == "festival":
        x = engines.festival(text, name, params["stretch"], sample_rate)
    elif engine == "flite":
        x = engines.flite(text, name, params["stretch"], params["f0_mean"], sample_rate)
    else:
        raise UnisonoError(f"unknown speech engine {engine!r}")
    if "pitch" not in params:
        measure_heard(params, text, x, sample_rate)
    return x


def measure_heard(params: dict, text: str, x: np.ndarray, sample_rate: int) -> None:
    """Write into ``params`` the ``pitch`` (0-99, see :func:`heard_pitch`) and ``speed`` (words per minute) of a
    natural engine's audio ``x`` of ``text``: what its description and QA answers name."""
    params["pitch"] = heard_pitch(estimate_f0(x, sample_rate), params["gender"])
    params["speed"] = int(round(len(text.split()) / max(x.size / sample_rate, 0.1) * 60))


def heard_pitch(f0: float, gender: str) -> int:
    """A median F0 (Hz) on espeak-ng's 0-99 pitch scale as the descriptions read it (below 35 low, above 65
    high), relative to the voice's gender: male 100-140 Hz and female 175-235 Hz are medium."""
    if f0 <= 0:
        return 50
    lo, hi = (100.0, 140.0) if gender == "male" else (175.0, 235.0)
    return int(np.clip(round(35 + (f0 - lo) / (hi - lo) * 30), 0, 99))


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
