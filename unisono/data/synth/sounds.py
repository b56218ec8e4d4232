"""Procedural sound events (17 classes), real one-shots (10 classes, optional) and scenes that mix 1 to 3 of
them, with captions.

Every event is made from its parameters alone (seeded), and its caption is written from the same
parameters, so that a caption always matches its audio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from unisono.errors import UnisonoError

from .effects import coloured_noise

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve"]


def _env(n: int, attack: float, release: float, sr: int) -> np.ndarray:
    e = np.ones(n, dtype=np.float64)
    a, r = min(int(attack * sr), n // 2), min(int(release * sr), n // 2)
    if a:
        e[:a] = np.linspace(0, 1, a)
    if r:
        e[-r:] = np.linspace(1, 0, r)
    return e


def _decay(n: int, tau: float, sr: int) -> np.ndarray:
    return np.exp(-np.arange(n) / (tau * sr))


def _bandpass(x: np.ndarray, sr: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1 / sr)
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, x.size)


def _tone(freq, n, sr, phase=0.0):
    return np.sin(2 * np.pi * np.cumsum(np.broadcast_to(freq, (n,))) / sr + phase)


def _place(out: np.ndarray, x: np.ndarray, start: int) -> None:
    end = min(out.size, start + x.size)
    if end > start:
        out[start:end] += x[: end - start]


def _pitch_word(f: float, low: float, high: float) -> str:
    return "low-pitched" if f < low else ("high-pitched" if f > high else "")


def siren(rng, sr):
    dur = rng.uniform(1.5, 3.5)
    rate = rng.uniform(0.3, 3.0)
    centre = rng.uniform(600, 1300)
    n = int(dur * sr)
    t = np.arange(n) / sr
    f = centre * (1 + 0.35 * np.sin(2 * np.pi * rate * t))
    x = _tone(f, n, sr) + 0.3 * _tone(2 * f, n, sr)
    style = "wailing slowly" if rate < 1.2 else "yelping quickly"
    return x * _env(n, 0.1, 0.2, sr), {"rate_hz": round(rate, 2), "centre_hz": round(centre)}, f"a siren {style}"


def beep(rng, sr):
    count = int(rng.integers(1, 6))
    freq = rng.uniform(500, 2500)
    length = rng.uniform(0.08, 0.35)
    gap = rng.uniform(0.1, 0.35)
    n = int((count * (length + gap)) * sr)
    x = np.zeros(n)
    b = _tone(freq, int(length * sr), sr) * _env(int(length * sr), 0.005, 0.01, sr)
    for i in range(count):
        _place(x, b, int(i * (length + gap) * sr))
    pw = _pitch_word(freq, 900, 1800)
    word = "beep" if count == 1 else "beeps"
    return x, {"count": count, "freq_hz": round(freq)}, f"{NUMBER_WORDS[count]} {pw + ' ' if pw else ''}{word}"


def knock(rng, sr):
    count = int(rng.integers(2, 6))
    res = rng.uniform(150, 450)
    gap = rng.uniform(0.15, 0.35)
    n = int((count * gap + 0.3) * sr)
    x = np.zeros(n)
    m = int(0.12 * sr)
    hit = (
        _tone(res, m, sr) + 0.5 * _tone(res * 2.3, m, sr) + 0.3 * rng.standard_normal(m) * _decay(m, 0.004, sr)
    ) * _decay(m, 0.02, sr)
    for i in range(count):
        _place(x, hit * rng.uniform(0.8, 1.0), int(i * gap * sr))
    return x, {"count": count, "resonance_hz": round(res)}, f"{NUMBER_WORDS[count]} knocks on a door"


def bird_chirp(rng, sr):
    count = int(rng.integers(2, 8))
    base = rng.uniform(2500, 5000)
    n = int((count * 0.22 + 0.2) * sr)
    x = np.zeros(n)
    for i in range(count):
        m = int(rng.uniform(0.05, 0.12) * sr)
        sweep = base * (1 + rng.uniform(0.2, 0.5) * np.linspace(-1, 1, m) * rng.choice([-1, 1]))
        _place(x, _tone(sweep, m, sr) * np.hanning(m), int((i * 0.22 + rng.uniform(0, 0.05)) * sr))
    return x, {"count": count, "base_hz": round(base)}, "a bird chirping"


def engine(rng, sr):
    dur = rng.uniform(2.0, 4.0)
    f0 = rng.uniform(25, 70)
    n = int(dur * sr)
    t = np.arange(n) / sr
    x = sum((0.7**k) * _tone(f0 * (k + 1), n, sr, rng.uniform(0, 6)) for k in range(10))
    x = x * (1 + 0.3 * np.sin(2 * np.pi * f0 / 4 * t)) + 0.3 * _bandpass(rng.standard_normal(n), sr, 50, 800)
    state = "idling" if f0 < 45 else "revving"
    return x * _env(n, 0.3, 0.3, sr), {"f0_hz": round(f0, 1)}, f"an engine {state}"


def rain(rng, sr):
    dur = rng.uniform(2.0, 4.0)
    n = int(dur * sr)
    heavy = rng.random() < 0.5
    x = _bandpass(rng.standard_normal(n), sr, 800, 7000) * (0.6 if heavy else 0.3)
    drops = int(dur * (60 if heavy else 20))
    for _ in range(drops):
        m = int(0.01 * sr)
        _place(x, rng.standard_normal(m) * _decay(m, 0.002, sr) * rng.uniform(0.5, 1.5), int(rng.integers(0, n - m)))
    return x * _env(n, 0.3, 0.3, sr), {"heavy": bool(heavy)}, "heavy rain falling" if heavy else "light rain falling"


def clapping(rng, sr):
    count = int(rng.integers(4, 13))
    rate = rng.uniform(2.5, 6.0)
    n = int((count / rate + 0.3) * sr)
    x = np.zeros(n)
    for i in range(count):
        m = int(0.05 * sr)
        c = _bandpass(rng.standard_normal(m), sr, 800, 5000) * _decay(m, 0.008, sr)
        _place(x, c, int((i / rate + rng.uniform(0, 0.03)) * sr))
    return x, {"count": count, "rate_hz": round(rate, 2)}, "a person clapping"


def dog_bark(rng, sr):
    count = int(rng.integers(1, 5))
    f0 = rng.uniform(250, 700)
    n = int((count * 0.45 + 0.2) * sr)
    x = np.zeros(n)
    for i in range(count):
        m = int(rng.uniform(0.15, 0.25) * sr)
        glide = f0 * np.linspace(1.2, 0.8, m)
        src = sum(_tone(glide * (k + 1), m, sr) / (k + 1) for k in range(8))
        b = _bandpass(src, sr, 300, 3000) * _env(m, 0.01, 0.08, sr) + 0.2 * rng.standard_normal(m) * _decay(m, 0.05, sr)
        _place(x, b, int(i * 0.45 * sr))
    size = "a small dog" if f0 > 480 else "a large dog"
    word = "barks" if count > 1 else "bark"
    return x, {"count": count, "f0_hz": round(f0)}, f"{size} giving {NUMBER_WORDS[count]} {word}"


def bell(rng, sr):
    f = rng.uniform(300, 1500)
    dur = rng.uniform(1.5, 3.0)
    n = int(dur * sr)
    x = sum(a * _tone(f * r, n, sr) * _decay(n, dur / (1 + i), sr)
            for i, (r, a) in enumerate([(1, 1), (2.76, 0.6), (5.4, 0.4), (8.93, 0.25)]))
    pw = _pitch_word(f, 600, 1100)
    return x, {"freq_hz": round(f)}, f"a {pw + ' ' if pw else ''}bell ringing"


def alarm(rng, sr):
    dur = rng.uniform(1.5, 3.0)
    f1, f2 = rng.uniform(600, 1000), rng.uniform(1100, 1600)
    period = rng.uniform(0.15, 0.4)
    n = int(dur * sr)
    t = np.arange(n) / sr
    f = np.where((t // period) % 2 == 0, f1, f2)
    x = np.sign(_tone(f, n, sr)) * 0.5
    return _bandpass(x, sr, 100, 6000) * _env(n, 0.01, 0.05, sr), {"period_s": round(period, 3)}, "an alarm going off"


def footsteps(rng, sr):
    count = int(rng.integers(3, 9))
    pace = rng.uniform(0.35, 0.7)
    n = int((count * pace + 0.3) * sr)
    x = np.zeros(n)
    for i in range(count):
        m = int(0.1 * sr)
        s = (_tone(rng.uniform(60, 110), m, sr) + 0.4 * _bandpass(rng.standard_normal(m), sr, 200, 2000)) * _decay(
            m, 0.02, sr
        )
        _place(x, s, int(i * pace * sr))
    speed = "running" if pace < 0.45 else "walking"
    return x, {"count": count, "pace_s": round(pace, 3)}, f"footsteps of someone {speed}"


def wind(rng, sr):
    dur = rng.uniform(2.0, 4.0)
    n = int(dur * sr)
    t = np.arange(n) / sr
    x = coloured_noise("brown", n, rng) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t))
    return _bandpass(x, sr, 40, 1500) * _env(n, 0.5, 0.5, sr), {}, "wind blowing"


def water_drip(rng, sr):
    count = int(rng.integers(3, 8))
    gap = rng.uniform(0.25, 0.6)
    n = int((count * gap + 0.3) * sr)
    x = np.zeros(n)
    for i in range(count):
        m = int(0.06 * sr)
        f0 = rng.uniform(700, 1400)
        _place(x, _tone(f0 * np.linspace(1, 1.8, m), m, sr) * _decay(m, 0.015, sr), int(i * gap * sr))
    return x, {"count": count, "gap_s": round(gap, 3)}, "water dripping"


def phone_ring(rng, sr):
    rings = int(rng.integers(1, 4))
    n = int((rings * 1.0 + 0.2) * sr)
    x = np.zeros(n)
    m = int(0.6 * sr)
    r = (_tone(440, m, sr) + _tone(480, m, sr)) * 0.5 * _env(m, 0.01, 0.02, sr)
    for i in range(rings):
        _place(x, r, int(i * 1.0 * sr))
    word = "ring" if rings == 1 else "rings"
    return x, {"count": rings}, f"a telephone with {NUMBER_WORDS[rings]} {word}"


def thunder(rng, sr):
    dur = rng.uniform(2.0, 4.0)
    n = int(dur * sr)
    x = _bandpass(rng.standard_normal(n), sr, 20, 300) * _decay(n, dur / 3, sr)
    crack = int(0.1 * sr)
    x[:crack] += _bandpass(rng.standard_normal(crack), sr, 200, 4000) * _decay(crack, 0.03, sr)
    return x * _env(n, 0.02, 0.3, sr), {}, "thunder rumbling"


def typing(rng, sr):
    dur = rng.uniform(1.5, 3.0)
    n = int(dur * sr)
    x = np.zeros(n)
    t = 0.0
    while t < dur - 0.05:
        m = int(0.015 * sr)
        _place(x, _bandpass(rng.standard_normal(m), sr, 2000, 7000) * _decay(m, 0.003, sr), int(t * sr))
        t += rng.uniform(0.06, 0.25)
    return x, {}, "someone typing on a keyboard"


def whistle(rng, sr):
    dur = rng.uniform(0.8, 2.0)
    f = rng.uniform(1200, 3000)
    n = int(dur * sr)
    t = np.arange(n) / sr
    x = _tone(f * (1 + 0.01 * np.sin(2 * np.pi * 6 * t)), n, sr) + 0.05 * rng.standard_normal(n)
    return x * _env(n, 0.05, 0.1, sr), {"freq_hz": round(f)}, "a person whistling"


EVENTS = {
    "siren": siren, "beep": beep, "knock": knock, "bird_chirp": bird_chirp, "engine": engine, "rain": rain,
    "clapping": clapping, "dog_bark": dog_bark, "bell": bell, "alarm": alarm, "footsteps": footsteps,
    "wind": wind, "water_drip": water_drip, "phone_ring": phone_ring, "thunder": thunder, "typing": typing,
    "whistle": whistle,
}
# A short verb phrase per class for scene captions ("a dog barks at 1.2 s").
SCENE_PHRASES = {
    "siren": "a siren wails", "beep": "a device beeps", "knock": "someone knocks", "bird_chirp": "a bird chirps",
    "engine": "an engine runs", "rain": "rain falls", "clapping": "someone claps", "dog_bark": "a dog barks",
    "bell": "a bell rings", "alarm": "an alarm sounds", "footsteps": "footsteps pass", "wind": "wind blows",
    "water_drip": "water drips", "phone_ring": "a phone rings", "thunder": "thunder rumbles",
    "typing": "someone types", "whistle": "someone whistles",
}


def make_event(name: str, rng: np.random.Generator, sample_rate: int, level_db: float = -20.0):
    """One event of class ``name`` at an RMS level of ``level_db`` dBFS: ``(audio, params, phrase)``."""
    x, params, phrase = EVENTS[name](rng, sample_rate) if name in EVENTS else _real_event(name, rng, sample_rate)
    x = np.asarray(x, dtype=np.float64)
    r = np.sqrt(np.mean(x**2)) + 1e-12
    x = x / r * 10 ** (level_db / 20)
    top = float(np.max(np.abs(x)))
    if top > 0.7:  # impulsive events (knocks, claps) have a high crest factor: keep their peaks safe
        x = x * (0.7 / top)
    return x.astype(np.float32), {"event": name, **params}, phrase


def caption_event(phrase: str, duration: float, rng: np.random.Generator) -> str:
    forms = ["{p}.", "The sound of {p}.", "{p}, lasting about {d:.1f} seconds.", "A recording of {p}."]
    text = forms[int(rng.integers(len(forms)))].format(p=phrase, d=duration)
    return text[:1].upper() + text[1:]


def render_scene(events: list[dict], sample_rate: int, duration: float, background: str,
                 rng: np.random.Generator) -> np.ndarray:
    """Mix pre-made events (``{"audio", "start"}``) over a quiet background into ``duration`` seconds."""
    n = int(duration * sample_rate)
    out = np.zeros(n, dtype=np.float32)
    if background != "silence":
        bg = coloured_noise({"pink noise": "pink", "brown noise": "brown"}[background], n, rng) * 10 ** (-42 / 20)
        out += bg.astype(np.float32)
    for ev in events:
        _place(out, ev["audio"], int(ev["start"] * sample_rate))
    return out


def scene_caption(events: list[dict], background: str) -> str:
    """Caption with timing: "A dog barks at 0.4 s, then a bell rings at 2.1 s, over faint pink noise."."""
    parts = []
    for i, ev in enumerate(sorted(events, key=lambda e: e["start"])):
        p = scene_phrase(ev["event"])
        parts.append(f"{'then ' if i else ''}{p} at {ev['start']:.1f} s")
    text = ", ".join(parts)
    bg = "" if background == "silence" else f", over faint {background}"
    return text[:1].upper() + text[1:] + bg + "."


# -- real one-shots ------------------------------------------------------------------------------------
# Recorded sounds of Debian's sonic-pi-samples (freesound.org recordings, CC0), read where it is installed: a class
# per kind of sound, each a list of file names, a caption phrase and a scene phrase. Used beside the procedural
# classes when a corpus is made with real sounds (:func:`set_real_sounds`); never copied into the repository.
SONIC_PI_DIR = Path("/usr/share/sonic-pi/samples")
REAL_EVENTS = {
    "kick_drum": (("bd_808", "bd_boom", "bd_fat", "bd_haus", "bd_klub", "bd_pure", "bd_tek", "drum_bass_hard",
                   "drum_bass_soft", "drum_heavy_kick"), "a kick drum", "a kick drum thumps"),
    "snare_drum": (("drum_snare_hard", "drum_snare_soft", "sn_dolf", "sn_dub", "sn_generic", "sn_zome",
                    "elec_snare", "elec_hi_snare"), "a snare drum", "a snare drum cracks"),
    "cymbal": (("drum_cymbal_hard", "drum_cymbal_soft", "drum_cymbal_open", "drum_splash_hard", "drum_splash_soft"),
               "a cymbal crash", "a cymbal crashes"),
    "tom_drum": (("drum_tom_hi_hard", "drum_tom_hi_soft", "drum_tom_mid_hard", "drum_tom_mid_soft", "drum_tom_lo_hard",
                  "drum_tom_lo_soft"), "a tom drum", "a tom drum booms"),
    "cowbell": (("drum_cowbell",), "a cowbell", "a cowbell clanks"),
    "tabla": (("tabla_dhec", "tabla_ghe1", "tabla_ghe4", "tabla_ke1", "tabla_na", "tabla_re", "tabla_tas1", "tabla_te1",
               "tabla_tun1", "tabla_tun3"), "a tabla", "a tabla is struck"),
    "finger_snap": (("perc_snap", "perc_snap2"), "fingers snapping", "someone snaps their fingers"),
    "door": (("perc_door",), "a door", "a door bangs"),
    "crow": (("misc_crow",), "a crow cawing", "a crow caws"),
    "vinyl_scratch": (("vinyl_scratch", "vinyl_backspin", "vinyl_rewind"), "a record being scratched",
                      "a record scratches"),
}
_real = False


def real_sounds_available() -> bool:
    return all((SONIC_PI_DIR / f"{n}.flac").is_file() for files, _, _ in REAL_EVENTS.values() for n in files)


def real_sounds() -> bool:
    """Whether the corpus's sounds draw from the real one-shots too (:func:`set_real_sounds`)."""
    return _real


def set_real_sounds(on: bool) -> None:
    """Whether the corpus's sounds and scenes draw from the real one-shots too (worker processes forked after this
    call inherit it)."""
    global _real
    if on and not real_sounds_available():
        raise UnisonoError(f"real sounds need Debian's sonic-pi-samples in {SONIC_PI_DIR} "
                           "(apt-get install sonic-pi-samples)")
    _real = bool(on)


def event_names() -> list[str]:
    """The sound classes a corpus draws from, in a fixed order: the procedural ones (alone, as in the corpora
    before real sounds), then the real ones when they are on."""
    return sorted(EVENTS) + (sorted(REAL_EVENTS) if _real else [])


def scene_phrase(name: str) -> str:
    return SCENE_PHRASES[name] if name in SCENE_PHRASES else REAL_EVENTS[name][2]


def _real_event(name: str, rng: np.random.Generator, sr: int):
    import soundfile as sf  # noqa: PLC0415 (soundfile: not on the GPU image)

    from unisono.audio import resample, to_mono  # noqa: PLC0415 (soundfile/soxr: not on the GPU image)

    files, phrase, _ = REAL_EVENTS[name]
    fname = files[int(rng.integers(len(files)))]
    data, file_sr = sf.read(str(SONIC_PI_DIR / f"{fname}.flac"), dtype="float32", always_2d=True)
    x = resample(to_mono(data.T)[0], file_sr, sr)
    x = x[: int(4.0 * sr)]  # at most 4 s of a long one
    fade = min(int(0.02 * sr), x.size // 4)
    if fade:
        x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return x, {"sample": fname}, phrase
