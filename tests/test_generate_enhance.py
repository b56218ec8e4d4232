"""``--enhance``: the enhancement stage after the codec in the Python API, the CLI and the server (tiny checkpoint,
a random enhancer whose residual is not zero)."""

import io
import shutil

import numpy as np
import pytest
import torch

from unisono.codec.enhance import Enhancer, EnhancerConfig
from unisono.inference import Pipeline
from unisono.options import GenerationOptions

OPTS = GenerationOptions(seed=4, max_duration=1.0, top_k=30)
INP = {"caption": "A bell rings."}


@pytest.fixture(scope="module")
def enhanced(tiny_checkpoint, tmp_path_factory):
    """A copy of the tiny checkpoint with an enhancer/, and the pipeline loaded with it."""
    ckpt = tmp_path_factory.mktemp("enh") / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    torch.manual_seed(0)
    enh = Enhancer(EnhancerConfig(width=8, latent_dim=4))
    torch.nn.init.normal_(enh.out.weight, 0.0, 0.02)
    enh.save_pretrained(ckpt / "enhancer")
    return ckpt, Pipeline.from_pretrained(ckpt, enhance=True)


def test_the_api_enhances_every_audio_output_and_streams_the_same(tiny_checkpoint, enhanced):
    ckpt, pipe = enhanced
    plain = Pipeline.from_pretrained(tiny_checkpoint).generate_batch("text_to_sound", [INP], OPTS)[0]
    out = pipe.generate("text_to_sound", **INP, **vars(OPTS))
    assert pipe.output_rate == out.sample_rate == 48000 and pipe.output_channels == 2
    assert out.wav.shape == (2, 3 * plain.wav.shape[0]) and out.info["enhanced"]
    assert np.allclose(out.wav, pipe.enhancer.enhance(plain.wav, 16000).numpy(), atol=1e-5)
    assert not np.allclose(out.wav[0], out.wav[1])  # stereo
    chunks = []
    streamed = pipe.generate_stream("text_to_sound", INP, OPTS, emit=chunks.append, chunk_frames=5)
    assert streamed.sample_rate == 48000 and all(c.shape[0] == 2 for c in chunks)
    assert np.allclose(np.concatenate(chunks, axis=-1), out.wav, atol=1e-4)
    assert pipe.generate_batch("text_to_sound", [INP], OPTS, enhance=False)[0].wav.ndim == 1
    assert pipe.generate("caption", audio=(plain.wav, 16000)).text is not None  # text outputs as they are
    from unisono.checkpoint import carried_parts

    assert carried_parts(ckpt)["enhancer"] == ckpt / "enhancer"  # fine-tuned / preference-tuned copies keep it
    assert carried_parts(tiny_checkpoint)["enhancer"] is None


def test_cli_enhance_writes_48k_stereo_and_a_checkpoint_without_one_is_one_line(tiny_checkpoint, enhanced, tmp_path,
                                                                                 capsys, monkeypatch):
    from unisono import audio
    from unisono.cli import main

    ckpt, _ = enhanced
    out = tmp_path / "o.wav"
    assert main(["generate", "text_to_sound", "--checkpoint", str(ckpt), "--caption", "A bell rings.",
                 "--max-duration", "0.5", "-o", str(out), "--enhance"]) == 0
    wav, sr = audio.load(out, mono=False)
    assert sr == 48000 and wav.shape[0] == 2
    assert "2 channels" in capsys.readouterr().out

    def load(*a, **k):
        raise AssertionError("the model was loaded before --enhance was checked")

    monkeypatch.setattr(Pipeline, "from_pretrained", load)
    for extra, message in [([], "has no enhancer; train one with `unisono codec train-enhancer`"),
                           ([str(tmp_path)], "is not an enhancer directory")]:
        code = main(["generate", "text_to_sound", "--checkpoint", str(tiny_checkpoint), "--caption", "x",
                     "-o", str(tmp_path / "x.wav"), "--enhance", *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.wav").exists()


def test_the_server_answers_48k_stereo_whole_and_streamed(enhanced):
    import soundfile as sf
    from fastapi.testclient import TestClient

    from unisono.serve import ServerLimits, create_app

    _, pipe = enhanced
    with TestClient(create_app(pipe, ServerLimits(max_output_seconds=1.0))) as c:
        listed = c.get("/tasks").json()
        assert listed["sample_rate"] == 48000 and listed["channels"] == 2
        body = {"task": "text_to_sound", "caption": "A bell rings.", "seed": 2, "max_duration": 1.0, "top_k": 30}
        whole = c.post("/generate", json=body)
        streamed = c.post("/generate", json={**body, "stream": True})
        assert whole.status_code == streamed.status_code == 200 and streamed.headers["x-sample-rate"] == "48000"
        a, sr = sf.read(io.BytesIO(streamed.content))
        b, sr_b = sf.read(io.BytesIO(whole.content))
        assert sr == sr_b == 48000 and b.ndim == 2 and b.shape[1] == 2
        assert a.shape == b.shape and np.allclose(a, b, atol=3 / 32768)
