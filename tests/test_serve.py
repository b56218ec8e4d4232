"""The HTTP server's contract: schema, errors as 4xx, limits, batching, queue, timeouts, load."""

import asyncio
import base64
import io
import resource
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from serve_helpers import LiveServer, TonePipeline, fuzz_no_5xx

from unisono.errors import UnisonoError
from unisono.options import OPTION_NAMES, GenerationOptions
from unisono.serve import ServerLimits, create_app
from unisono.serve.schema import OPTION_BOUNDS


def wav_b64(seconds=0.5, sr=16000):
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * sr), dtype=np.float32) + 0.01, sr, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def client():
    app = create_app(TonePipeline(), ServerLimits(max_text_chars=200, max_output_seconds=5.0, max_body_bytes=200_000))
    with TestClient(app) as c:
        yield c


def test_health_and_tasks(client):
    assert client.get("/health").json()["status"] == "ok"
    tasks = {t["name"]: t for t in client.get("/tasks").json()["tasks"]}
    assert tasks["tts"]["inputs"] == {"text": "text", "prompt": "audio"} and tasks["asr"]["output"] == "text"
    assert tasks["tts"]["title"] == "Text to speech" and tasks["tts"]["example"]["text"]
    assert all(set(t["input_help"]) == set(t["inputs"]) and t["summary"] for t in tasks.values())


def test_generate_json_multipart_and_formats(client):
    r = client.post("/generate", json={"task": "tts", "text": "x" * 40, "seed": 3})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    wav, sr = sf.read(io.BytesIO(r.content))
    assert sr == 16000 and abs(wav.size / sr - 0.5) < 0.01
    r = client.post("/generate", data={"task": "se", "max_duration": "0.3"},
                    files={"audio": ("a.wav", base64.b64decode(wav_b64(1.0)), "audio/wav")})
    assert r.status_code == 200 and abs(float(r.headers["X-Duration"]) - 0.3) < 0.01
    r = client.post("/generate", json={"task": "asr", "audio": wav_b64(0.5)})
    assert r.json() == {"task": "asr", "text": "0.50 seconds"}
    r = client.post("/generate", json={"task": "tts", "text": "hello", "response_format": "json"})
    audio = base64.b64decode(r.json()["audio_base64"])
    assert sf.read(io.BytesIO(audio))[1] == 16000
    r = client.post("/generate", json={"task": "tts", "text": "hello", "stream": True})
    streamed, sr = sf.read(io.BytesIO(r.content))  # header sizes are open-ended; libsndfile reads to the end
    assert sr == 16000 and streamed.size > 0
    flac = client.post("/generate", json={"task": "tts", "text": "hello", "response_format": "flac"})
    assert flac.headers["content-type"] == "audio/flac"
    assert np.array_equal(sf.read(io.BytesIO(flac.content), dtype="int16")[0], sf.read(io.BytesIO(
        client.post("/generate", json={"task": "tts", "text": "hello"}).content), dtype="int16")[0])
    pcm = client.post("/generate", json={"task": "tts", "text": "hello", "response_format": "pcm"})
    assert pcm.headers["x-sample-rate"] == "16000" and len(pcm.content) == 2 * int(0.15 * 16000)


@pytest.mark.parametrize("body,status,message", [
    ({"task": "nope"}, 422, "unknown task 'nope'"),
    ({"text": "hi"}, 422, "'task' is required"),
    ({"task": "tts"}, 422, "needs the text input 'text'"),
    ({"task": "tts", "text": "x" * 201}, 413, "limit is 200"),
    ({"task": "tts", "text": "hi", "max_duration": 60}, 422, "over this server's limit"),
    ({"task": "tts", "text": "hi", "top_p": 0}, 422, "top_p must be in (0, 1]"),
    ({"task": "tts", "text": "hi", "seed": 1.5}, 422, "seed must be a whole number"),
    ({"task": "tts", "text": "hi", "response_format": "mp3"}, 422, "response_format must be one of 'wav', 'flac'"),
    ({"task": "tts", "text": "hi", "response_format": "pcm", "stream": True}, 422, "stream answers a chunked WAV"),
    ({"task": "se", "audio": "not base64!"}, 422, "not valid base64"),
    ({"task": "se", "audio": base64.b64encode(b"RIFFjunk").decode()}, 400, "could not be decoded"),
    ({"task": "se", "audio": wav_b64(), "text": "x"}, 422, "does not take 'text'"),
])
def test_bad_requests_get_clear_4xx(client, body, status, message):
    r = client.post("/generate", json=body)
    assert r.status_code == status and message in r.json()["error"]


def test_an_input_the_checkpoint_has_a_default_for_may_be_left_out():
    """``tts`` without a prompt uses the checkpoint's default voice (defaults/prompt.wav), as the CLI and the
    API do: the task lists the prompt as optional and the request reaches the pipeline without it."""
    pipe = TonePipeline()
    with TestClient(create_app(pipe)) as c:
        r = c.post("/generate", json={"task": "tts", "text": "hello"})
        assert r.status_code == 200, r.text
        assert pipe.seen[-1] == {"text": "hello"}
        tts = {t["name"]: t for t in c.get("/tasks").json()["tasks"]}["tts"]
        assert tts["optional"] == ["prompt"]
    with TestClient(create_app(TonePipeline(default_inputs={}))) as c:  # no default voice: the prompt is needed
        r = c.post("/generate", json={"task": "tts", "text": "hello"})
        assert r.status_code == 422 and "needs the audio input 'prompt'" in r.json()["error"]


def test_paths_in_requests_never_reach_the_file_system(client, tmp_path, monkeypatch):
    """An audio input is bytes (base64 or an upload), never a path: a path to a real, valid WAV on the
    server is refused, and no file is opened while the request is handled."""
    real = tmp_path / "secret.wav"
    sf.write(real, np.zeros(1600, dtype=np.float32), 16000)
    opened = []
    import builtins

    def spy(fn):
        return lambda f, *a, **k: opened.append(str(f)) or fn(f, *a, **k)

    monkeypatch.setattr(builtins, "open", spy(builtins.open))
    init = sf.SoundFile.__init__
    monkeypatch.setattr(sf.SoundFile, "__init__",  # every soundfile read goes through here
                        lambda self, file, *a, **k: opened.append(str(file)) or init(self, file, *a, **k))
    for value in (str(real), "file://" + str(real), base64.b64encode(str(real).encode()).decode()):
        r = client.post("/generate", json={"task": "se", "audio": value})
        assert r.status_code in (400, 422), (value, r.status_code)
    r = client.post("/generate", data={"task": "se", "audio": str(real)})  # a form field, not an upload
    assert r.status_code in (400, 415, 422)
    r = client.post("/generate", json={"task": "tts", "text": str(real)})  # text stays text
    assert r.status_code == 200
    assert not [f for f in opened if "secret" in f]


def test_size_and_type_limits(client):
    r = client.post("/generate", content=b"{" + b" " * 300_000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/generate", content=b"task=tts", headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/generate", content=b"[1, 2", headers={"content-type": "application/json"}).status_code == 400
    long = {"task": "se", "audio": wav_b64(6.0, sr=2000)}
    app = create_app(TonePipeline(), ServerLimits(max_input_seconds=5.0))
    with TestClient(app) as c:
        r = c.post("/generate", json=long)
        assert r.status_code == 413 and "limit is 5 s" in r.json()["error"]


def test_openapi_schema_is_valid_and_fuzzing_finds_no_5xx():
    from openapi_spec_validator import validate

    app = create_app(TonePipeline(), ServerLimits(max_body_bytes=100_000))
    validate(app.openapi())
    assert fuzz_no_5xx(app, max_examples=40) == []


def test_openapi_describes_each_task_with_the_limits_the_server_enforces():
    """One body schema per task (the inputs it needs and takes), text limited to ``max_text_chars``, option
    defaults of the task with ``max_duration`` clamped to ``max_output_seconds``, option ranges as enforced."""
    pipe = TonePipeline(default_inputs={})
    limits = ServerLimits(max_text_chars=200, max_output_seconds=5.0)
    body = create_app(pipe, limits).openapi()["paths"]["/generate"]["post"]["requestBody"]["content"]
    branches = {b["properties"]["task"]["const"]: b for b in body["application/json"]["schema"]["oneOf"]}
    assert set(branches) == set(pipe.tasks)
    assert branches["tts"]["required"] == ["task", "text", "prompt"]
    assert set(branches["se"]["properties"]) - set(OPTION_NAMES) == {"task", "audio", "response_format", "stream"}
    assert branches["asr"]["properties"]["response_format"]["enum"] == ["json"]
    assert branches["tts"]["properties"]["text"]["maxLength"] == 200
    duration = branches["tts"]["properties"]["max_duration"]
    assert duration["default"] == 5.0 and duration["maximum"] == 5.0
    form = {b["properties"]["task"]["const"]: b for b in body["multipart/form-data"]["schema"]["oneOf"]}
    assert form["se"]["properties"]["audio"]["format"] == "binary"
    with_default = create_app(TonePipeline(), limits).openapi()["paths"]["/generate"]["post"]["requestBody"]
    tts = next(b for b in with_default["content"]["application/json"]["schema"]["oneOf"]
               if b["properties"]["task"]["const"] == "tts")
    assert tts["required"] == ["task", "text"] and "Optional" in tts["properties"]["prompt"]["description"]
    step_in = {"minimum": 0, "maximum": 0, "exclusiveMinimum": 1e-6}
    step_out = {"minimum": -1e-6, "maximum": 1e-6, "exclusiveMinimum": 0}
    for name, bounds in OPTION_BOUNDS.items():  # each bound is the one GenerationOptions.validate applies
        for key, edge in bounds.items():
            if abs(edge) == 2**31:  # the parser's limit on every number
                continue
            GenerationOptions().with_(**{name: edge + step_in[key]}).validate()
            with pytest.raises(UnisonoError):
                GenerationOptions().with_(**{name: edge + step_out[key]}).validate()


def test_queue_full_is_503_and_timeouts_cancel():
    pipe = TonePipeline(delay_s=1.0)
    app = create_app(pipe, ServerLimits(max_queue=1, timeout_s=0.3))
    with TestClient(app) as c:
        results = {}

        def first():
            results["first"] = c.post("/generate", json={"task": "tts", "text": "a"})

        t = threading.Thread(target=first)
        t.start()
        assert pipe.started.wait(5)
        busy = c.post("/generate", json={"task": "tts", "text": "b"})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        t.join()
        assert results["first"].status_code == 504 and "cancelled" in results["first"].json()["error"]
        deadline = time.monotonic() + 3
        while app.state.scheduler.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.state.scheduler.pending == 0  # the cancelled job left the queue
        assert c.get("/health").status_code == 200


def test_32_concurrent_clients_are_answered_batched_and_memory_stays_bounded():
    pipe = TonePipeline(delay_s=0.02)
    app = create_app(pipe, ServerLimits(max_queue=64, max_batch=8, batch_window_s=0.02))
    live = LiveServer(app)
    base = live.__enter__()

    async def load(n_requests):
        async with httpx.AsyncClient(base_url=base, timeout=30) as cl:
            sem = asyncio.Semaphore(32)

            async def one(i):
                async with sem:
                    r = await cl.post("/generate", json={"task": "tts", "text": "hello " * (i % 5 + 1), "seed": 1})
                    return r.status_code

            return await asyncio.gather(*(one(i) for i in range(n_requests)))

    try:
        codes = asyncio.run(load(64))
        rss_after_first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        codes += asyncio.run(load(128))
        rss_after_second = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        live.__exit__(None, None, None)
    assert codes.count(200) == len(codes)
    assert max(pipe.batch_sizes) > 1  # concurrent requests were batched
    assert rss_after_second - rss_after_first < 50 * 1024  # KiB: twice the requests, no growth to speak of


def test_web_page_is_served_offline(client):
    page = client.get("/").text
    assert '<script src="/static/app.js">' in page and "http" not in page.replace("http-equiv", "")
    js = client.get("/static/app.js").text
    assert "fetch(\"/generate\"" in js and "https://" not in js
