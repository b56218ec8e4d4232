"""48 kHz stereo references for the enhancement stage (:mod:`unisono.codec.enhance`): music and sound clips.

Music: the corpus's MIDI files (``CORPUS/midi/{split}/*.mid``) rendered by FluidSynth at 48 kHz in stereo
(:func:`unisono.data.synth.tools.fluidsynth_render` with ``stereo=True``). The corpus's General MIDI sound
fonts play every instrument in the centre, so each MIDI channel is first given a seeded random pan (controller
10, uniform over 20-108 of 0-127) and reverb send (controller 91, 20-90) and FluidSynth's stereo reverb is on:
the image is the sound font's, placed as a mixing engineer would place a small band.

Sounds: scenes of 1-3 procedural events (:func:`unisono.data.synth.sounds.make_event`, made at 48 kHz; the real
one-shots too when the corpus's real sounds are on), each *panned* with a constant-power law
(``gain_L = cos((p + 1) pi / 4)``, ``gain_R = sin((p + 1) pi / 4)``, ``p`` uniform in [-0.8, 0.8]) and its far
channel *delayed* by ``|p| * 0.6`` ms (an interaural time difference), over half the time a background of pink
noise drawn independently per channel at -45 dBFS (a decorrelated ambience). Every clip is set to a random RMS
level of -26 to -18 dBFS (peaks at most 0.95), the levels the codec was trained on.

Each clip is ``(id, kind, wav float32 [2, S] at 48000 Hz)``; :func:`unisono.codec.enhance_data.build_pairs`
passes its mono downmix through the codec.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from unisono.errors import UnisonoError

RATE = 48000


def level(wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``wav [2, S]`` at a random RMS of -26 to -18 dBFS, peaks at most 0.95; float32."""
    rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
    if rms < 1e-6:
        return wav.astype(np.float32)
    x = wav * (10 ** (rng.uniform(-26.0, -18.0) / 20) / rms)
    peak = float(np.max(np.abs(x)))
    return (x * min(1.0, 0.95 / peak)).astype(np.float32)


def pan(x: np.ndarray, p: float, sample_rate: int = RATE) -> np.ndarray:
    """Mono ``x [S]`` placed at ``p`` in [-1, 1] (left to right): constant-power gains, the far channel delayed by
    ``|p| * 0.6`` ms; ``[2, S]`` float32."""
    theta = (p + 1.0) * np.pi / 4
    d = int(round(abs(p) * 0.0006 * sample_rate))
    late = np.concatenate([np.zeros(d, np.float32), x[: x.shape[0] - d]]) if d else x
    left, right = (x, late) if p <= 0 else (late, x)
    return np.stack([np.cos(theta) * left, np.sin(theta) * right]).astype(np.float32)


def midi_files(midi: Path, split: str) -> list[Path]:
    """The MIDI files of ``split``: ``midi/{split}/*.mid`` of a corpus's ``midi/`` folder, a corpus directory, or a
    plain folder of ``.mid`` files."""
    midi = Path(midi)
    for d in (midi / "midi" / split, midi / split, midi):
        files = sorted(d.glob("*.mid")) if d.is_dir() else []
        if files:
            return files
    raise UnisonoError(f"no MIDI files for split {split!r} in {midi} (expected {midi}/midi/{split}/*.mid, "
                       f"{midi}/{split}/*.mid or {midi}/*.mid; `unisono synth` writes them)")


def _placed_midi(src: Path, dst: Path, rng: np.random.Generator) -> None:
    """``src`` with a pan (CC 10) and reverb send (CC 91) per MIDI channel at its start, written to ``dst``."""
    import mido  # noqa: PLC0415 (the corpus generator's dependency)

    try:
        mid = mido.MidiFile(str(src))
    except (OSError, ValueError, EOFError) as e:
        raise UnisonoError(f"cannot read MIDI file {src} ({e})") from None
    channels = sorted({m.channel for t in mid.tracks for m in t if hasattr(m, "channel")})
    head = []
    for ch in channels:
        head.append(mido.Message("control_change", channel=ch, control=10, value=int(rng.integers(20, 109)), time=0))
        head.append(mido.Message("control_change", channel=ch, control=91, value=int(rng.integers(20, 91)), time=0))
    mid.tracks[0][0:0] = head
    mid.save(str(dst))


Clip = tuple[str, str, np.ndarray]  # (id, kind, wav float32 [2, S] at 48 kHz)


def music_clips(midi: Path, split: str, seed: int = 0, max_seconds: float = 10.0) -> Iterator[Clip]:
    """``(id, "music", wav [2, S] float32 at 48 kHz)`` for every MIDI file of ``split`` in a seeded random order,
    each placed (see the module doc), at most ``max_seconds`` long."""
    from unisono.data.synth import tools  # noqa: PLC0415 (FluidSynth, soundfile: CPU side only)

    files = midi_files(midi, split)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    with tempfile.TemporaryDirectory(prefix="unisono-enh-") as tmp:
        for i in order:
            placed = Path(tmp) / "placed.mid"
            _placed_midi(files[i], placed, rng)
            wav = tools.fluidsynth_render(placed, RATE, gain=0.4, stereo=True)[:, : int(max_seconds * RATE)]
            if wav.shape[-1] >= RATE // 2 and np.abs(wav).max() > 1e-4:
                yield files[i].stem, "music", level(wav, rng)


def sound_scene(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """One scene: 1-3 panned events over silence or decorrelated pink noise; ``[2, S]`` float32 at 48 kHz."""
    from unisono.data.synth import sounds  # noqa: PLC0415 (the corpus generator: CPU side only)
    from unisono.data.synth.effects import coloured_noise  # noqa: PLC0415 (the corpus generator: CPU side only)

    n = int(seconds * RATE)
    out = np.zeros((2, n), np.float32)
    if rng.random() < 0.5:
        out += np.stack([coloured_noise("pink", n, rng) for _ in range(2)]) * 10 ** (-45 / 20)
    names = sounds.event_names()
    for _ in range(int(rng.integers(1, 4))):
        x, _, _ = sounds.make_event(names[int(rng.integers(len(names)))], rng, RATE, float(rng.uniform(-26, -16)))
        x = pan(x[: n], float(rng.uniform(-0.8, 0.8)))
        start = int(rng.integers(0, max(1, n - x.shape[1] // 2)))
        m = min(x.shape[1], n - start)
        out[:, start : start + m] += x[:, :m]
    return out


def sound_clips(seed: int = 0, seconds: tuple[float, float] = (3.0, 6.0)) -> Iterator[Clip]:
    """Endless ``(id, "sound", wav [2, S] float32 at 48 kHz)`` scenes, seeded (another seed: other scenes)."""
    rng = np.random.default_rng(seed)
    i = 0
    while True:
        wav = sound_scene(rng, float(rng.uniform(*seconds)))
        yield f"sound-{seed}-{i:05d}", "sound", level(wav, rng)
        i += 1
