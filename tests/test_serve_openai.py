"""OpenAI's audio routes, driven by the ``openai`` Python package pointed at a live server: speech (wav, flac,
pcm, speed, voices), transcriptions (json, text), the same limits and one-line errors as /generate, and the
real pipeline's default voice."""

import io

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from serve_helpers import LiveServer, TonePipeline

from unisono.inference import Pipeline
from unisono.serve import ServerLimits, create_app
from unisono.serve.output import pcm16

LIMITS = ServerLimits(max_text_chars=200, max_output_seconds=20.0, max_input_seconds=5.0)


def wav_file(seconds: float, sr: int = 16000, value: float = 0.01) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.full(int(seconds * sr), value, np.float32), sr, format="WAV")
    return buf.getvalue()


def peak_hz(wav: np.ndarray, sr: int) -> float:
    return float(np.fft.rfftfreq(wav.size, 1 / sr)[np.argmax(np.abs(np.fft.rfft(wav * np.hanning(wav.size))))])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``(client, pipeline, base_url)``: a tone pipeline with the checkpoint's default voice and a voice 'alice'."""
    alice = tmp_path_factory.mktemp("voices") / "alice.wav"
    alice.write_bytes(wav_file(1.25, sr=8000))
    pipe = TonePipeline()
    with LiveServer(create_app(pipe, LIMITS, voices={"alice": alice})) as url:
        yield openai.OpenAI(base_url=url + "/v1", api_key="not-checked", max_retries=0), pipe, url


def test_speech_in_each_format(server):
    client, pipe, _ = server
    raw = client.audio.speech.with_raw_response.create(model="tts-1", input="x" * 40, voice="default")
    assert raw.headers["x-model"] == "unisono" and raw.headers["content-type"] == "audio/wav"
    wav, sr = sf.read(io.BytesIO(raw.content), dtype="float32")
    assert sr == 16000 and wav.size == 8000  # the tone pipeline: 0.1 s + 0.01 s per character
    assert pipe.seen[-1] == {"text": "x" * 40}  # the default voice: the pipeline fills in its own prompt
    flac = client.audio.speech.create(model="tts-1", input="x" * 40, voice="default", response_format="flac")
    assert np.array_equal(sf.read(io.BytesIO(flac.read()), dtype="float32")[0], wav)  # the same samples
    pcm = client.audio.speech.create(model="anything", input="x" * 40, voice={"id": "default"}, response_format="pcm")
    assert pcm.read() == pcm16(sf.read(io.BytesIO(raw.content), dtype="float32")[0])  # raw <i2 mono at 16 kHz
    long = client.audio.speech.create(model="tts-1", input="y" * 190, voice="default", response_format="pcm")
    assert len(long.read()) == 2 * int(2.0 * 16000)  # not cut at /generate's 10 s default: the text bounds it


def test_speech_voices_speed_and_options(server):
    client, pipe, url = server
    assert httpx.get(url + "/v1/audio/voices").json() == {
        "voices": [{"name": "default", "source": "checkpoint"}, {"name": "alice", "source": "server"}],
        "default": "default"}
    assert [m.id for m in client.models.list()] == ["unisono"]
    client.audio.speech.create(model="tts-1", input="hello", voice="alice")
    prompt, prompt_sr = pipe.seen[-1]["prompt"]
    assert prompt_sr == 8000 and prompt.size == 10000  # alice.wav reached the pipeline as the tts prompt
    text = "x" * 90  # 1.0 s of 220 Hz
    for speed in (0.5, 2.0, 4.0):
        out = client.audio.speech.create(model="tts-1", input=text, voice="default", speed=speed)
        wav, sr = sf.read(io.BytesIO(out.read()), dtype="float32")
        assert wav.size == round(16000 / speed) and abs(peak_hz(wav, sr) - 220) < 3  # shorter or longer, same pitch
    out = client.audio.speech.create(model="tts-1", input=text, voice="default", extra_body={"seed": 3})
    assert abs(peak_hz(sf.read(io.BytesIO(out.read()), dtype="float32")[0], 16000) - 250) < 3  # seed reached it


def test_transcriptions_as_json_and_text(server):
    client, pipe, _ = server
    result = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_file(0.5), "audio/wav"))
    assert result.text == "0.50 seconds"
    assert client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_file(1.5)),
                                              response_format="text").strip() == "1.50 seconds"
    result = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_file(0.25)), language="en",
                                                temperature=0.0)
    assert result.text == "0.25 seconds" and set(pipe.seen[-1]) == {"audio"}


@pytest.mark.parametrize("call,kwargs,status,message", [
    ("speech", {"voice": "alloy"}, 422, "unknown voice 'alloy'; this server's voices: default, alice"),
    ("speech", {"response_format": "mp3"}, 422, "response_format must be one of 'wav', 'flac', 'pcm'"),
    ("speech", {"speed": 4.5}, 422, "speed must be between 0.25 and 4.0"),
    ("speech", {"speed": 0.2}, 422, "speed must be between 0.25 and 4.0"),
    ("speech", {"input": "x" * 201}, 413, "the limit is 200"),
    ("speech", {"input": " "}, 422, "input is required"),
    ("speech", {"instructions": "whisper"}, 422, "does not take 'instructions'"),
    ("speech", {"extra_body": {"top_p": 0}}, 422, "top_p must be in (0, 1]"),
    ("speech", {"extra_body": {"max_duration": 60}}, 422, "over this server's limit of 20 s"),
    ("transcriptions", {"response_format": "srt"}, 422, "response_format must be one of 'json', 'text'"),
    ("transcriptions", {"prompt": "Hello"}, 422, "does not take 'prompt'"),
    ("transcriptions", {"temperature": 1.5}, 422, "temperature must be between 0 and 1"),
    ("transcriptions", {"file": ("a.wav", b"RIFFjunk")}, 400, "could not be decoded"),
    ("transcriptions", {"file": ("a.wav", wav_file(6.0))}, 413, "the limit is 5 s"),
])
def test_bad_requests_are_the_same_one_line_errors(server, call, kwargs, status, message):
    client = server[0]
    if call == "speech":
        args = {"model": "tts-1", "input": "hello", "voice": "default", **kwargs}
        make = client.audio.speech.create
    else:
        args = {"model": "whisper-1", "file": ("a.wav", wav_file(0.5)), **kwargs}
        make = client.audio.transcriptions.create
    with pytest.raises(openai.APIStatusError) as e:
        make(**args)
    assert e.value.status_code == status and message in e.value.message, e.value.body  # the one-line error
    assert e.value.body == {"message": e.value.body["message"], "type": "invalid_request_error", "param": None,
                            "code": None}  # OpenAI's error shape


def test_requests_the_openai_client_would_not_send(server):
    _, _, url = server
    r = httpx.post(url + "/v1/audio/transcriptions", json={"model": "whisper-1", "file": "a.wav"})
    assert r.status_code == 422 and "uploaded audio file" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/audio/transcriptions", json={"model": "whisper-1"})
    assert r.status_code == 422 and "file is required" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/audio/speech", json={"model": 3, "input": "hi", "voice": "default"})
    assert r.status_code == 422 and "model must be a string" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/audio/speech", content=b"input=hi", headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_a_server_without_voices_or_tts_says_so():
    pipe = TonePipeline(default_inputs={})
    pipe.language = "en-us"
    with LiveServer(create_app(pipe, LIMITS)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.UnprocessableEntityError, match="knows no voices: start it with --voice"):
            client.audio.speech.create(model="tts-1", input="hi", voice="default")
        with pytest.raises(openai.UnprocessableEntityError, match="transcribes en-us; language 'fr'"):
            client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_file(0.5)), language="fr")
    pipe.tasks.pop("tts")
    with LiveServer(create_app(pipe, LIMITS)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.UnprocessableEntityError, match="this model has no tts task"):
            client.audio.speech.create(model="tts-1", input="hi", voice="default")


def test_the_real_pipeline_speaks_in_its_default_voice(tiny_checkpoint, tmp_path):
    """A checkpoint with defaults/prompt.wav: the speech route's default voice and /generate without a prompt
    give exactly what the Python API gives without a prompt."""
    root = tiny_checkpoint.parent
    voice = tmp_path / "voice.wav"
    sf.write(voice, (0.1 * np.random.default_rng(3).standard_normal(16000)).astype(np.float32), 16000)
    ckpt = Pipeline.package(root / "lm-delay", root / "shards", tmp_path / "voiced", codec_dir=root / "codec",
                            defaults={"prompt": voice})
    pipe = Pipeline.from_pretrained(ckpt)
    text = "The old baker slowly painted the red door."
    api = pipe.generate("tts", text=text, seed=0, max_duration=1.0)
    with LiveServer(create_app(pipe, ServerLimits(max_output_seconds=1.0))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        speech = client.audio.speech.with_raw_response.create(model="tts-1", input=text, voice="default",
                                                               response_format="pcm")
        assert speech.headers["x-model"] == "voiced" and speech.content == pcm16(api.wav)
        r = httpx.post(url + "/generate", json={"task": "tts", "text": text, "max_duration": 1.0}, timeout=60)
        assert r.status_code == 200 and np.array_equal(sf.read(io.BytesIO(r.content), dtype="int16")[0],
                                                       np.frombuffer(pcm16(api.wav), "<i2"))
        transcript = client.audio.transcriptions.create(model="whisper-1", file=("v.wav", voice.read_bytes()),
                                                        language="en")
        assert isinstance(transcript.text, str)


def test_voices_are_checked_before_serving(tmp_path, capsys):
    from unisono.cli import main
    from unisono.errors import UnisonoError

    assert main(["serve", "--voice", "alice"]) == 2
    assert "--voice takes NAME=FILE, got 'alice'" in capsys.readouterr().err
    assert main(["serve", "--voice", f"alice={tmp_path / 'none.wav'}"]) == 2
    assert "none.wav is not a file" in capsys.readouterr().err
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFFjunk")
    with pytest.raises(UnisonoError, match="voice 'bob' .*could not be decoded"):
        create_app(TonePipeline(), voices={"bob": junk})
    with pytest.raises(UnisonoError, match="the checkpoint has its own 'default' voice"):
        create_app(TonePipeline(), voices={"default": junk})
    mine = tmp_path / "mine.wav"
    mine.write_bytes(wav_file(1.0))
    app = create_app(TonePipeline(default_inputs={}), voices={"default": mine})  # no default of its own: one here
    with TestClient(app) as c:
        assert [v["name"] for v in c.get("/v1/audio/voices").json()["voices"]] == ["default"]
