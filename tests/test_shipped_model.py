"""The model that ships in the repository (docs/model_card.md): it loads offline, knows every task, fits
the size budget, and speaks from text with its default voice (the README's first command)."""

import subprocess
import sys

import numpy as np
import pytest

from unisono.checkpoint import DEFAULT_CHECKPOINT
from unisono.inference import Pipeline
from unisono.options import GenerationOptions

ALL_TASKS = {"tts", "vc", "se", "tse", "svs", "text_to_sound", "text_to_music", "audio_edit", "dereverb",
             "instruct_tts", "speech_edit", "asr", "caption", "audio_qa", "text_to_sound_reasoning",
             "text_to_music_reasoning"}


@pytest.fixture(scope="module")
def shipped():
    return Pipeline.from_pretrained()


def test_the_shipped_checkpoint_is_complete_and_small():
    files = [p for p in DEFAULT_CHECKPOINT.rglob("*") if p.is_file()]
    names = {p.relative_to(DEFAULT_CHECKPOINT).as_posix() for p in files}
    assert {"config.json", "model.safetensors", "vocab.json", "tasks.yaml", "codec/config.json",
            "codec/model.safetensors", "defaults/prompt.wav"} <= names
    assert sum(p.stat().st_size for p in files) < 40e6


def test_it_knows_every_task(shipped):
    assert set(shipped.tasks) == ALL_TASKS
    assert shipped.sample_rate == 16000 and shipped.vocab.num_codebooks == 4
    # the inputs it has a default for (defaults/prompt.wav: the default voice) are optional, in every front end
    assert shipped.tasks["tts"].optional == ("prompt",) and shipped.tasks["asr"].optional == ()


def test_tts_with_the_default_voice_is_audible_and_reproducible(shipped):
    opts = GenerationOptions(seed=0, max_duration=6.0)
    a = shipped.generate("tts", opts, text="The old baker painted the red door.")
    b = shipped.generate("tts", opts, text="The old baker painted the red door.")
    assert a.sample_rate == 16000 and np.array_equal(a.wav, b.wav)
    assert 0.5 <= a.wav.size / 16000 <= 6.0
    assert np.isfinite(a.wav).all() and float(np.sqrt(np.mean(a.wav ** 2))) > 1e-3


def test_asr_of_its_default_voice_gives_words(shipped):
    out = shipped.generate("asr", GenerationOptions(seed=0, max_duration=5.0),
                           speech=str(DEFAULT_CHECKPOINT / "defaults" / "prompt.wav"))
    assert isinstance(out.text, str) and len(out.text.split()) >= 2


def test_the_readme_command_writes_a_wav(tmp_path):
    out = tmp_path / "hello.wav"
    r = subprocess.run([sys.executable, "-m", "unisono", "generate", "tts", "--text", "Hello from unisono.",
                        "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-500:]
    import soundfile as sf

    wav, sr = sf.read(out)
    assert sr == 16000 and wav.size > 8000
