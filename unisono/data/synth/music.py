"""Music from a parametric description: MIDI (instrument, tempo, key, scale/mood, contour, register),
rendered with FluidSynth, with a caption written from the same parameters."""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np

from unisono.fileio import atomic_path

from . import tools

# General MIDI program numbers (0-based) and caption names.
INSTRUMENTS = {
    "piano": 0, "electric piano": 4, "harpsichord": 6, "celesta": 8, "glockenspiel": 9, "vibraphone": 11,
    "marimba": 12, "xylophone": 13, "church organ": 19, "accordion": 21, "nylon guitar": 24,
    "steel guitar": 25, "jazz guitar": 26, "violin": 40, "viola": 41, "cello": 42, "pizzicato strings": 45,
    "harp": 46, "string ensemble": 48, "trumpet": 56, "trombone": 57, "french horn": 60, "alto saxophone": 65,
    "oboe": 68, "bassoon": 70, "clarinet": 71, "flute": 73, "pan flute": 75, "square lead synth": 80,
    "sawtooth lead synth": 81,
}
HELD_OUT_INSTRUMENTS = {"harmonica": 22, "ocarina": 79, "kalimba": 108, "steel drums": 114}
ALL_INSTRUMENTS = {**INSTRUMENTS, **HELD_OUT_INSTRUMENTS}

SCALES = {  # semitone steps from the tonic, and the mood the caption uses
    "major": ([0, 2, 4, 5, 7, 9, 11], "happy"),
    "minor": ([0, 2, 3, 5, 7, 8, 10], "sad"),
    "dorian": ([0, 2, 3, 5, 7, 9, 10], "mysterious"),
    "pentatonic": ([0, 2, 4, 7, 9], "calm"),
    "blues": ([0, 3, 5, 6, 7, 10], "bluesy"),
}
TONICS = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
CONTOURS = ("rising", "falling", "arch", "valley", "wave", "repeating")
REGISTERS = {"low": 48, "middle": 60, "high": 72}  # MIDI note of the tonic


def tempo_word(bpm: float) -> str:
    return "slow" if bpm < 90 else ("fast" if bpm > 140 else "moderate")


def sample_params(rng: np.random.Generator, split: str) -> dict:
    pool = dict(INSTRUMENTS)
    if split == "test" and rng.random() < 0.5:
        pool = dict(HELD_OUT_INSTRUMENTS)
    names = sorted(pool)
    instrument = names[int(rng.integers(len(names)))]
    mode = sorted(SCALES)[int(rng.integers(len(SCALES)))]
    return {
        "instrument": instrument,
        "program": pool[instrument],
        "tempo_bpm": int(rng.integers(60, 181)),
        "key": TONICS[int(rng.integers(12))],
        "mode": mode,
        "mood": SCALES[mode][1],
        "contour": CONTOURS[int(rng.integers(len(CONTOURS)))],
        "register": sorted(REGISTERS)[int(rng.integers(len(REGISTERS)))],
        "drums": bool(rng.random() < 0.3),
        "bars": int(rng.integers(2, 4)),
    }


def _contour_degrees(contour: str, n: int, span: int, rng: np.random.Generator) -> np.ndarray:
    x = np.linspace(0, 1, n)
    shape = {
        "rising": x,
        "falling": 1 - x,
        "arch": 1 - np.abs(2 * x - 1),
        "valley": np.abs(2 * x - 1),
        "wave": 0.5 + 0.5 * np.sin(2 * np.pi * 2 * x),
        "repeating": np.tile([0, 0.5, 0.25, 0.75], n)[:n],
    }[contour]
    jitter = rng.integers(-1, 2, size=n) if contour != "repeating" else np.zeros(n, dtype=int)
    return np.clip(np.round(shape * span).astype(int) + jitter, 0, span)


def melody(params: dict, rng: np.random.Generator) -> list[tuple[int, float, float]]:
    """Notes ``(midi_pitch, start_beat, duration_beats)`` for 4/4 bars following the contour."""
    steps, _ = SCALES[params["mode"]]
    rhythm_bank = [
        [1, 1, 1, 1],
        [0.5] * 8,
        [1, 0.5, 0.5, 1, 1],
        [2, 1, 1],
        [0.5, 0.5, 1, 0.5, 0.5, 1],
        [1.5, 0.5, 1, 1],
    ]
    durations: list[float] = []
    for _ in range(params["bars"]):
        durations += rhythm_bank[int(rng.integers(len(rhythm_bank)))]
    degrees = _contour_degrees(params["contour"], len(durations), len(steps) + 3, rng)
    tonic = REGISTERS[params["register"]] + TONICS.index(params["key"])
    notes, beat = [], 0.0
    for d, deg in zip(durations, degrees):
        octave, idx = divmod(int(deg), len(steps))
        notes.append((tonic + 12 * octave + steps[idx], beat, d))
        beat += d
    return notes


def write_midi(path: str | Path, params: dict, notes: list[tuple[int, float, float]]) -> None:
    """Write a type-1 MIDI file: melody on channel 0 (+ a drum pattern on channel 9 if ``drums``)."""
    tpb = 480
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(params["tempo_bpm"]), time=0))
    meta.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    mid.tracks.append(meta)

    def track(events: list[tuple[int, mido.Message]]) -> mido.MidiTrack:
        tr = mido.MidiTrack()
        now = 0
        for tick, msg in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
            tr.append(msg.copy(time=tick - now))
            now = tick
        return tr

    ev = [(0, mido.Message("program_change", program=params["program"], channel=0))]
    for pitch, start, dur in notes:
        on, off = int(round(start * tpb)), int(round((start + dur * 0.95) * tpb))
        ev.append((on, mido.Message("note_on", note=pitch, velocity=90, channel=0)))
        ev.append((off, mido.Message("note_off", note=pitch, velocity=0, channel=0)))
    mid.tracks.append(track(ev))
    if params.get("drums"):
        total_beats = int(sum(d for _, _, d in notes))
        dev = []
        for b in range(total_beats * 2):
            drum = 36 if b % 4 == 0 else (38 if b % 4 == 2 else 42)  # kick, snare, closed hat
            t = b * tpb // 2
            dev.append((t, mido.Message("note_on", note=drum, velocity=70, channel=9)))
            dev.append((t + tpb // 4, mido.Message("note_off", note=drum, velocity=0, channel=9)))
        mid.tracks.append(track(dev))
    with atomic_path(path) as tmp:
        mid.save(str(tmp))


def render(midi_path: str | Path, params: dict, notes, sample_rate: int) -> np.ndarray:
    """Render with FluidSynth and cut to the music's length plus a 0.5 s release."""
    x = tools.fluidsynth_render(midi_path, sample_rate)
    end_beat = max(s + d for _, s, d in notes)
    n = int((end_beat * 60.0 / params["tempo_bpm"] + 0.5) * sample_rate)
    return np.ascontiguousarray(x[:n])


def caption(params: dict, rng: np.random.Generator) -> str:
    p = params
    drums = " with drums" if p["drums"] else ""
    t = tempo_word(p["tempo_bpm"])
    forms = [
        f"A {p['mood']} {p['contour']} melody in {p['key']} {p['mode']} played on the {p['instrument']} at "
        f"{p['tempo_bpm']} BPM, in a {p['register']} register{drums}.",
        f"{p['instrument'].capitalize()} playing a {t}, {p['mood']} tune in {p['key']} {p['mode']}{drums}; "
        f"the melody is {p['contour']} in a {p['register']} register, {p['tempo_bpm']} BPM.",
        f"{t.capitalize()} {p['mood']} music on {p['instrument']}{drums}, {p['key']} {p['mode']}, "
        f"{p['tempo_bpm']} beats per minute, {p['contour']} {p['register']} melody.",
    ]
    return forms[int(rng.integers(len(forms)))]


def singing_notes(syllables: list[str], rng: np.random.Generator, voice_gender: str) -> tuple[list, dict]:
    """A sung line: one note per syllable, ``(midi_pitch, start_s, end_s, syllable)``, plus its params."""
    mode = ("major", "minor", "pentatonic")[int(rng.integers(3))]
    steps, mood = SCALES[mode]
    tonic = (48 if voice_gender == "male" else 57) + int(rng.integers(0, 5))
    bpm = int(rng.integers(70, 131))
    beat = 60.0 / bpm
    contour = CONTOURS[int(rng.integers(len(CONTOURS) - 1))]
    degrees = _contour_degrees(contour, len(syllables), len(steps), rng)
    notes, t = [], 0.0
    for syl, deg in zip(syllables, degrees):
        d = beat * float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))
        octave, idx = divmod(int(deg), len(steps))
        notes.append([int(tonic + 12 * octave + steps[idx]), round(t, 4), round(t + d * 0.92, 4), syl])
        t += d
    return notes, {"tempo_bpm": bpm, "mode": mode, "mood": mood, "contour": contour}
