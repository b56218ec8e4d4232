"""The system programs the corpus generator drives: espeak-ng, sox and FluidSynth.

Each call checks that its program exists and fails with a one-line error naming the Debian package.
All functions return float32 mono NumPy arrays at the requested sample rate (Hz).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from functools import cache, lru_cache
from pathlib import Path

import mido
import numpy as np

from unisono.audio import resample, to_mono
from unisono.errors import MissingToolError, UnisonoError

SOUND_FONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
# The fuller General MIDI font (Debian musescore-general-soundfont, MIT): SF3, its samples Ogg-compressed, so it
# takes ~7 s to load; it is rendered by one FluidSynth kept loaded per process (pyfluidsynth), not one per file.
MUSESCORE_FONT_CANDIDATES = (
    "/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
    "/usr/share/sounds/sf3/MuseScore_General.sf3",
)
SOUND_FONTS = ("fluidr3", "musescore")
_font_choice = "fluidr3"


def musescore_font() -> str | None:
    """Path of the MuseScore General font when it and pyfluidsynth are installed, else ``None``."""
    try:
        import fluidsynth  # noqa: F401, PLC0415 (pyfluidsynth)
    except (ImportError, OSError):
        return None
    return next((p for p in MUSESCORE_FONT_CANDIDATES if Path(p).is_file()), None)


def sound_font_choice() -> str:
    """The font music is rendered with now (:func:`set_sound_font`): ``fluidr3`` or ``musescore``."""
    return _font_choice


def set_sound_font(name: str) -> None:
    """The font music is rendered with: ``fluidr3`` (the General MIDI font of before) or ``musescore``."""
    global _font_choice
    if name not in SOUND_FONTS:
        raise UnisonoError(f"unknown sound font {name!r}; choose one of {', '.join(SOUND_FONTS)}")
    if name == "musescore" and musescore_font() is None:
        raise UnisonoError("the MuseScore General sound font needs apt-get install musescore-general-soundfont "
                           "and pip install pyfluidsynth")
    _font_choice = name


@cache
def require(program: str, apt_package: str, purpose: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise MissingToolError(program, apt_package, purpose)
    return path


@cache
def sound_font() -> str:
    """Path of the General MIDI sound font (``UNISONO_SOUNDFONT`` overrides the search)."""
    override = os.environ.get("UNISONO_SOUNDFONT")
    if override:
        if not Path(override).is_file():
            raise UnisonoError(f"UNISONO_SOUNDFONT={override} is not a file; point it at a .sf2 sound font")
        return override
    for cand in SOUND_FONT_CANDIDATES:
        if Path(cand).is_file():
            return cand
    raise MissingToolError("a General MIDI sound font (FluidR3_GM.sf2)", "fluid-soundfont-gm", "music rendering")


def check_all() -> dict[str, str]:
    """Check every tool up front; return their versions (for the corpus README)."""
    require("espeak-ng", "espeak-ng", "speech synthesis")
    require("sox", "sox", "reverb")
    require("fluidsynth", "fluidsynth", "music rendering")
    font = sound_font()
    return {
        "espeak-ng": _first_line(["espeak-ng", "--version"]),
        "sox": _first_line(["sox", "--version"]),
        "fluidsynth": _first_line(["fluidsynth", "--version"]),
        "sound_font": Path(font).name,
    }


def _first_line(cmd: list[str]) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "unknown"


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise UnisonoError(f"{cmd[0]} failed ({err[-1] if err else 'exit ' + str(proc.returncode)})")
    return proc.stdout


def _parse_wav_int16(data: bytes) -> tuple[np.ndarray, int]:
    """Parse the streamed WAV that ``espeak-ng --stdout`` writes (its size fields are placeholders)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise UnisonoError("espeak-ng did not return WAV audio")
    sr = int.from_bytes(data[24:28], "little")
    pos = data.find(b"data", 12)
    if pos < 0:
        raise UnisonoError("espeak-ng returned WAV audio without a data chunk")
    pcm = np.frombuffer(data[pos + 8 : len(data) - (len(data) - pos - 8) % 2], dtype="<i2")
    return pcm.astype(np.float32) / 32768.0, sr


def trim_silence(x: np.ndarray, sample_rate: int, threshold_db: float = -45.0, margin_s: float = 0.05) -> np.ndarray:
    """Cut leading and trailing near-silence (below ``threshold_db`` relative to the peak), keeping a margin."""
    if x.size == 0:
        return x
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        return x[:0]
    loud = np.flatnonzero(np.abs(x) > peak * 10 ** (threshold_db / 20.0))
    margin = int(margin_s * sample_rate)
    return x[max(0, loud[0] - margin) : min(x.size, loud[-1] + margin + 1)]


def espeak(text: str, voice: str, pitch: int, speed: int, sample_rate: int, amplitude: int = 100) -> np.ndarray:
    """Speak ``text`` with espeak-ng ``voice`` (e.g. ``en-gb+f3``), ``pitch`` 0-99, ``speed`` in words/min."""
    if not text.strip():
        raise UnisonoError("cannot synthesise empty text")
    exe = require("espeak-ng", "espeak-ng", "speech synthesis")
    data = _run(
        [exe, "-v", voice, "-p", str(int(pitch)), "-s", str(int(speed)), "-a", str(amplitude), "--stdout", text]
    )
    x, sr = _parse_wav_int16(data)
    x = trim_silence(resample(x, sr, sample_rate), sample_rate)
    if x.size < sample_rate * 0.05:
        raise UnisonoError(f"espeak-ng produced no audible speech for {text!r} with voice {voice}")
    return np.ascontiguousarray(x, dtype=np.float32)


def sox_effect(x: np.ndarray, sample_rate: int, effects: list[str]) -> np.ndarray:
    """Apply sox effects (e.g. ``["reverb", "50"]``) to a float32 mono signal; no dither, repeatable."""
    exe = require("sox", "sox", "audio effects")
    fmt = ["-t", "f32", "-r", str(sample_rate), "-c", "1"]
    out = _run([exe, "-D", "-R", *fmt, "-", *fmt, "-", *effects], stdin=np.ascontiguousarray(x, np.float32).tobytes())
    return np.frombuffer(out, dtype=np.float32).copy()


def fluidsynth_render(midi_path: str | Path, sample_rate: int, gain: float = 0.4, stereo: bool = False) -> np.ndarray:
    """Render a MIDI file with FluidSynth and the chosen General MIDI sound font (:func:`set_sound_font`); mono
    float32 ``[S]`` at ``sample_rate``. ``stereo``: ``[2, S]`` from the command line with FluidSynth's stereo
    reverb on (the MIDI file's pan and reverb-send controllers place its channels; the enhancement stage's
    references, :mod:`unisono.data.enhance_pairs`)."""
    import soundfile as sf  # noqa: PLC0415 (soundfile: not on the GPU image)

    if _font_choice == "musescore" and not stereo:
        return _render_in_process(str(midi_path), musescore_font(), sample_rate, gain)
    exe = require("fluidsynth", "fluidsynth", "music rendering")
    font = musescore_font() if _font_choice == "musescore" else sound_font()
    with tempfile.TemporaryDirectory(prefix="unisono-fs-") as tmp:
        wav = Path(tmp) / "out.wav"
        _run([exe, "-ni", "-q", "-g", str(gain), "-r", str(sample_rate), "-R", "1" if stereo else "0", "-C", "0",
              "-T", "wav", "-F", str(wav), font, str(midi_path)])
        data, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    x = data.T if stereo else to_mono(data.T)[0]
    return np.ascontiguousarray(resample(x, sr, sample_rate), dtype=np.float32)


_synth_failed: dict[str, str] = {}


def _synth(font: str, sample_rate: int, gain: float):
    """One FluidSynth per process, font loaded once; reverb and chorus off, as the command-line renders. A font
    that fails to load fails every later call at once (with the first error), not after another load."""
    if font in _synth_failed:
        raise UnisonoError(_synth_failed[font])
    try:
        return _load_synth(font, sample_rate, gain)
    except UnisonoError as e:
        _synth_failed[font] = str(e)
        raise


@lru_cache(maxsize=2)
def _load_synth(font: str, sample_rate: int, gain: float):
    import fluidsynth  # noqa: PLC0415 (optional: pyfluidsynth)

    fs = fluidsynth.Synth(gain=gain, samplerate=float(sample_rate), **{
        "synth.reverb.active": 0, "synth.chorus.active": 0, "synth.dynamic-sample-loading": 0})
    if fs.sfload(font, update_midi_preset=1) < 0:
        raise UnisonoError(f"FluidSynth cannot load the sound font {font}")
    return fs


@lru_cache(maxsize=1)
def _write_float_fn():
    """libfluidsynth's ``fluid_synth_write_float`` (pyfluidsynth binds only the 16-bit writer)."""
    import fluidsynth  # noqa: PLC0415 (optional: pyfluidsynth)

    fn = fluidsynth._fl.fluid_synth_write_float
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                   ctypes.c_int, ctypes.c_int]
    return fn


def _write_float(fs, n: int) -> np.ndarray:
    """``n`` stereo frames of the synth as float32 ``[n, 2]`` (no 16-bit dither, whose state would carry over)."""
    buf = np.zeros(2 * n, dtype=np.float32)
    if _write_float_fn()(fs.synth, n, buf.ctypes.data, 0, 2, buf.ctypes.data, 1, 2) != 0:
        raise UnisonoError("FluidSynth failed to render")
    return buf.reshape(n, 2)


_BLOCK = 64  # FluidSynth renders in blocks of 64 frames and applies events at block starts


def _render_in_process(midi_path: str, font: str, sample_rate: int, gain: float, release_s: float = 1.0) -> np.ndarray:
    """Play a MIDI file's events (mido) into the process's FluidSynth and collect its output until ``release_s``
    after the last event: the same notes, programs, controllers and tempo as the command line. Events fall on
    64-frame block starts (4 ms at 16 kHz) and every render pulls whole blocks, so a file renders to the same
    samples whatever was rendered before it."""
    try:
        midi = mido.MidiFile(midi_path)
    except (OSError, ValueError, EOFError) as e:
        raise UnisonoError(f"cannot read MIDI file {midi_path} ({e})") from None
    fs = _synth(font, int(sample_rate), float(gain))
    _play(fs, midi, sample_rate, release_s)  # a file's first rendering differs in its first milliseconds from every
    return _play(fs, midi, sample_rate, release_s)  # later one, whatever came before: keep the second (~5 ms)


def _play(fs, midi, sample_rate: int, release_s: float) -> np.ndarray:
    fs.system_reset()
    chunks, clock, done = [], 0.0, 0
    for msg in midi:  # .time: seconds since the previous message, tempo applied
        clock += msg.time
        due = int(round(clock * sample_rate / _BLOCK)) * _BLOCK
        if due > done:
            chunks.append(_write_float(fs, due - done))
            done = due
        if msg.type == "note_on":
            fs.noteon(msg.channel, msg.note, msg.velocity)
        elif msg.type == "note_off":
            fs.noteoff(msg.channel, msg.note)
        elif msg.type == "program_change":
            fs.program_change(msg.channel, msg.program)
        elif msg.type == "control_change":
            fs.cc(msg.channel, msg.control, msg.value)
        elif msg.type == "pitchwheel":
            fs.pitch_bend(msg.channel, msg.pitch)
    chunks.append(_write_float(fs, -(-int(release_s * sample_rate) // _BLOCK) * _BLOCK))
    for ch in range(16):
        fs.all_sounds_off(ch)
    _write_float(fs, 8 * _BLOCK)  # let the stopped voices go before the next render
    return np.ascontiguousarray(np.concatenate(chunks).mean(axis=1), dtype=np.float32)
