"""The Python API on a tiny checkpoint: every task callable, right output types, bounds, reproducibility."""

import numpy as np
import pytest

from unisono.errors import UnisonoError
from unisono.inference import AudioOutput, Pipeline, TextOutput
from unisono.options import GenerationOptions


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return Pipeline.from_pretrained(tiny_checkpoint)


def inputs_for(pipe, task, sr=16000):
    rng = np.random.default_rng(1)
    out = {}
    for name, kind in pipe.tasks[task].inputs.items():
        if kind == "audio":
            out[name] = (0.1 * rng.standard_normal(sr).astype(np.float32), sr)
        elif name.endswith("_span"):
            out[name] = "0.2,0.5"
        elif name == "score":
            out[name] = "[[60, 0.0, 0.4, \"la\"], [62, 0.4, 0.8, \"da\"]]"
        else:
            out[name] = "The old baker slowly painted the red door."
    return out


def test_every_trained_task_is_listed_with_inputs(pipe):
    assert {"tts", "se", "asr", "caption", "text_to_sound", "text_to_music", "audio_qa", "svs", "vc", "tse",
            "dereverb", "audio_edit", "instruct_tts", "speech_edit"} <= set(pipe.tasks)
    assert pipe.tasks["tts"].inputs == {"text": "text", "prompt": "audio"}
    assert pipe.tasks["asr"].output == "text" and pipe.tasks["se"].output == "audio"
    assert pipe.tasks["speech_edit"].inputs["context_span"] == "text"


def test_every_task_runs_with_right_output_type_and_bounds(pipe):
    for task, spec in pipe.tasks.items():
        out = pipe.generate(task, seed=0, max_duration=0.5, **inputs_for(pipe, task))
        if spec.output == "audio":
            assert isinstance(out, AudioOutput) and out.sample_rate == 16000, task
            assert out.wav.dtype == np.float32 and out.wav.ndim == 1
            assert out.duration <= 0.5 + 1 / 50 + 1e-6, (task, out.duration)
        else:
            assert isinstance(out, TextOutput) and isinstance(out.text, str), task
            assert out.info["tokens"] <= 256


def test_seeds_reproduce_and_differ(pipe):
    inp = inputs_for(pipe, "tts")
    a = pipe.generate("tts", seed=7, max_duration=0.4, **inp)
    b = pipe.generate("tts", seed=7, max_duration=0.4, **inp)
    c = pipe.generate("tts", seed=8, max_duration=0.4, **inp)
    assert np.array_equal(a.wav, b.wav)
    assert a.wav.shape != c.wav.shape or not np.array_equal(a.wav, c.wav)


def test_a_batched_row_equals_the_same_inputs_run_alone(pipe):
    inp = inputs_for(pipe, "se")
    other = {"noisy": (np.full(16000, 0.02, dtype=np.float32), 16000)}  # same length: batched together
    opts = GenerationOptions(seed=3, max_duration=0.4)
    batch = pipe.generate_batch("se", [inp, other, inp], opts)
    alone = pipe.generate_batch("se", [inp], opts)[0]
    assert len(batch) == 3 and np.array_equal(batch[0].wav, alone.wav) and np.array_equal(batch[2].wav, alone.wav)
    assert np.array_equal(batch[1].wav, pipe.generate_batch("se", [other], opts)[0].wav)


def test_same_length_tasks_are_bounded_by_their_input(pipe):
    short = {"noisy": (np.full(3200, 0.05, dtype=np.float32), 16000)}  # 0.2 s
    out = pipe.generate("se", seed=0, max_duration=5.0, temperature=1.0, **short)
    assert out.duration <= 0.2 * 1.2 + 5 / 50 + 1e-6


def test_outputs_do_not_end_before_their_length_floor(pipe):
    """The untrained tiny model often samples its end token early; the floors forbid it: a same-length task
    gives at least 0.8 x its input, TTS at least 2 frames per phone token (and at most 6 per token + 0.5 s)."""
    from unisono.tasks import MAX_FRAMES_PER_PHONE, MIN_FRAMES_PER_PHONE, PHONE_SLACK_FRAMES, SAME_LENGTH_RATIO

    noisy = {"noisy": (np.full(16000, 0.05, dtype=np.float32), 16000)}  # 1 s = 50 frames
    for seed in range(4):
        out = pipe.generate("se", seed=seed, max_duration=5.0, **noisy)
        assert out.duration >= SAME_LENGTH_RATIO[0] * 1.0 - 1e-6, (seed, out.duration)
    text = "The old baker slowly painted the red door."
    inp = {**inputs_for(pipe, "tts"), "text": text}
    io = pipe.io("tts")
    seg, _ = io.condition(pipe.templates["tts"].conditions[0], inp)  # the phone tokens of the text
    floor = io.prepare(inp, pipe.default_options("tts").with_(max_duration=8.0)).min_new
    assert len(seg.ids) > 20 and floor == int(len(seg.ids) * MIN_FRAMES_PER_PHONE)
    ceiling = io.prepare(inp, pipe.default_options("tts").with_(max_duration=60.0)).max_new
    assert ceiling == int(len(seg.ids) * MAX_FRAMES_PER_PHONE) + PHONE_SLACK_FRAMES  # below 60 s of frames
    for seed in range(4):
        out = pipe.generate("tts", seed=seed, max_duration=8.0, **inp)
        assert out.info["frames"] >= floor, (seed, out.info["frames"], floor)
    # a run-on (the untrained model rarely ends) stops at the ceiling
    out = pipe.generate("tts", seed=0, max_duration=60.0, **{**inp, "text": "Hello there."})
    short = io.prepare({**inp, "text": "Hello there."}, pipe.default_options("tts").with_(max_duration=60.0))
    assert out.info["frames"] <= short.max_new < 60 * 50
    sung = pipe.io("svs").prepare(inputs_for(pipe, "svs"), pipe.default_options("svs").with_(max_duration=5.0))
    assert sung.max_new == 5 * 50 + 1  # singing: no per-phone ceiling (the score sets its length)


def test_guidance_changes_the_output_and_is_reproducible(pipe):
    inp = inputs_for(pipe, "text_to_sound")
    plain = pipe.generate("text_to_sound", seed=1, max_duration=0.3, guidance_scale=1.0, **inp)
    guided = pipe.generate("text_to_sound", seed=1, max_duration=0.3, guidance_scale=3.0, **inp)
    again = pipe.generate("text_to_sound", seed=1, max_duration=0.3, guidance_scale=3.0, **inp)
    assert isinstance(guided, AudioOutput) and np.array_equal(guided.wav, again.wav)
    assert plain.wav.shape != guided.wav.shape or not np.array_equal(plain.wav, guided.wav)


def test_bad_input_is_a_clear_error(pipe, tmp_path):
    with pytest.raises(UnisonoError, match="unknown task 'nope'"):
        pipe.generate("nope", text="x")
    with pytest.raises(UnisonoError, match="needs the input 'prompt'"):
        pipe.generate("tts", text="hello")
    with pytest.raises(UnisonoError, match="is empty"):
        pipe.generate("tts", text="  ", prompt=(np.zeros(1600, np.float32), 16000))
    with pytest.raises(UnisonoError, match="does not exist"):
        pipe.generate("se", noisy=str(tmp_path / "missing.wav"))
    with pytest.raises(UnisonoError, match="does not take"):
        pipe.generate("se", noisy=(np.zeros(1600, np.float32), 16000), text="x")
    with pytest.raises(UnisonoError, match="top_p"):
        pipe.generate("se", noisy=(np.zeros(1600, np.float32), 16000), top_p=0.0)


def test_incomplete_or_tampered_checkpoint_is_refused(tiny_checkpoint, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "vocab.json").unlink()
    with pytest.raises(UnisonoError, match="vocab.json is missing"):
        Pipeline.from_pretrained(broken)
    shutil.copy(tiny_checkpoint / "vocab.json", broken / "vocab.json")
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnisonoError):
        Pipeline.from_pretrained(broken)
    with pytest.raises(UnisonoError, match="does not exist"):
        Pipeline.from_pretrained(tmp_path / "nothing")


def _swap_tasks(vocab_json, a="tts", b="vc"):
    import json

    d = json.loads(vocab_json.read_text())
    d["tasks"][a], d["tasks"][b] = d["tasks"][b], d["tasks"][a]
    vocab_json.write_text(json.dumps(d))


def test_a_vocab_json_with_swapped_task_ids_is_refused(tiny_checkpoint, tmp_path):
    """The weights record the layout they were written with: a vocab.json whose task ids were swapped (a valid
    file, every range as before) is refused with one line by the pipeline and by the fine-tuning loaders."""
    import shutil

    from unisono import checkpoint as C
    from unisono.vocab import LAYOUT_KEY, Vocab
    from unisono.weights import read_metadata

    ckpt = tmp_path / "swapped"
    shutil.copytree(tiny_checkpoint, ckpt)
    assert read_metadata(ckpt / "model.safetensors")[LAYOUT_KEY] == Vocab.load(ckpt).layout_fingerprint()
    _swap_tasks(ckpt / "vocab.json")
    Vocab.load(ckpt)  # the file itself is valid
    with pytest.raises(UnisonoError, match="not the vocabulary the model was written with") as e:
        Pipeline.from_pretrained(ckpt)
    assert "\n" not in str(e.value)
    with pytest.raises(UnisonoError, match="task ids, ranges or tokenizers changed"):
        C.carried_parts(ckpt)  # fine-tuning and preference tuning read a checkpoint so
    with pytest.raises(UnisonoError, match="vocabulary mismatch|not the vocabulary"):
        Pipeline.package(ckpt, tiny_checkpoint.parent / "shards", tmp_path / "repackaged")
    shutil.copy(tiny_checkpoint / "vocab.json", ckpt / "vocab.json")
    assert {"tts", "vc"} <= set(Pipeline.from_pretrained(ckpt).tasks)


def test_weights_without_a_layout_fingerprint_still_load(tiny_checkpoint, tmp_path):
    """Checkpoints made before the fingerprint (the shipped model among them) load as before."""
    import shutil

    from safetensors.torch import load_file, save_file

    from unisono import checkpoint as C
    from unisono.vocab import LAYOUT_KEY
    from unisono.weights import read_metadata

    assert LAYOUT_KEY not in read_metadata(C.DEFAULT_CHECKPOINT / "model.safetensors")
    assert C.require_checkpoint(C.DEFAULT_CHECKPOINT) == C.DEFAULT_CHECKPOINT
    old = tmp_path / "old"
    shutil.copytree(tiny_checkpoint, old)
    meta = {k: v for k, v in read_metadata(old / "model.safetensors").items() if k != LAYOUT_KEY}
    save_file(load_file(old / "model.safetensors"), old / "model.safetensors", metadata=meta)
    assert Pipeline.from_pretrained(old).tasks


@pytest.mark.parametrize("precision", ["float32", "float16", "int8"])
def test_every_checkpoint_writer_records_the_layout(tmp_path, precision):
    """write_checkpoint (from a model or from a trained LM directory, in every precision) and save_pretrained with
    a vocab.json stamp the layout of the vocabulary written beside the weights."""
    import torch

    from unisono import checkpoint as C
    from unisono.lm import LMConfig, UnisonoLM
    from unisono.vocab import LAYOUT_KEY, Vocab
    from unisono.weights import read_metadata

    vocab = Vocab.build(["asr", "tts"], num_codebooks=2, codebook_size=16, phones=10)
    other = Vocab.build(["asr", "tts", "vc"], num_codebooks=2, codebook_size=16, phones=10)
    assert vocab.layout_fingerprint() != other.layout_fingerprint()
    torch.manual_seed(0)
    lm = UnisonoLM.from_config(LMConfig(vocab_size=vocab.size, num_streams=2, pad_id=vocab.pad_id, d_model=16,
                                        n_layers=1, n_heads=2, max_seq_len=64))
    vocab.save(tmp_path / "vocab.json")
    lm.save_pretrained(tmp_path / "lm", vocab_json=tmp_path / "vocab.json")
    for name, src in (("from_model", lm), ("from_dir", tmp_path / "lm")):
        out = tmp_path / name
        out.mkdir()
        C.write_checkpoint(out, src, vocab, None, None, {}, precision=precision)
        assert read_metadata(out / "model.safetensors")[LAYOUT_KEY] == vocab.layout_fingerprint(), name
        assert C.require_checkpoint(out, parts=C.LM_PARTS) == out
        other.save(out / "vocab.json")
        with pytest.raises(UnisonoError, match="not the vocabulary"):
            C.require_checkpoint(out, parts=C.LM_PARTS)
    with pytest.raises(UnisonoError, match="not the vocabulary"):  # another layout is not stamped onto the weights
        C.write_checkpoint(tmp_path / "from_model", tmp_path / "lm", other, None, None, {})


def test_audio_alias_names_the_only_audio_input(pipe):
    out = pipe.generate("se", seed=0, max_duration=0.2, audio=(np.full(3200, 0.05, np.float32), 16000))
    assert isinstance(out, AudioOutput)


def test_cli_generate_audio_and_text(tiny_checkpoint, tmp_path, capsys):
    from unisono import audio
    from unisono.cli import main

    spk = tmp_path / "spk.wav"
    audio.save(spk, np.full(8000, 0.05, np.float32), 16000)
    out = tmp_path / "out.wav"
    code = main(["generate", "tts", "--checkpoint", str(tiny_checkpoint), "--text", "Hello there.", "--prompt",
                 str(spk), "--seed", "2", "--max-duration", "0.4", "-o", str(out)])
    assert code == 0
    wav, sr = audio.load(out)
    assert sr == 16000 and wav.shape[1] <= int(0.42 * 16000)
    assert "wrote" in capsys.readouterr().out
    assert main(["generate", "asr", "--checkpoint", str(tiny_checkpoint), "--audio", str(spk)]) == 0
    assert main(["generate", "--list", "--checkpoint", str(tiny_checkpoint)]) == 0
    assert "tts" in capsys.readouterr().out
    assert main(["generate", "tts", "--checkpoint", str(tiny_checkpoint), "--text", "hi", "--prompt", str(spk)]) == 2
    assert "give an output file with -o" in capsys.readouterr().err
    assert main(["generate", "se", "--checkpoint", str(tmp_path / "none"), "--noisy", str(spk), "-o", "x.wav"]) == 2
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize("argv, message", [
    (["tts", "--text", "hi", "--tpo-k", "5", "-o", "OUT/o.wav"], "unknown option --tpo-k (did you mean --top-k?)"),
    (["tts", "--txt", "hi", "-o", "OUT/o.wav"], "does not take ['txt'] (did you mean 'text'?)"),
    (["tts", "--text", "-o", "OUT/o.wav"], "--text has no value"),
    (["tts", "hi", "-o", "OUT/o.wav"], "could not read 'hi'"),
    (["no_such_task", "--text", "hi"], "unknown task 'no_such_task'; this checkpoint can do: asr,"),
    (["tts", "--text", "hi"], "task tts makes audio: give an output file with -o"),
    (["tts", "--text", "hi", "-o", "OUT/o.mp3"], "the file must end with one of .wav, .flac, .ogg"),
    (["se", "--noisy", "OUT/missing.wav", "-o", "OUT/o.wav"], "--noisy OUT/missing.wav: no such audio file"),
    (["tts", "--text", "hi", "--top-p", "0", "-o", "OUT/o.wav"], "top_p must be in (0, 1]"),
    (["tts", "--text", "hi", "--revise", "-1", "-o", "OUT/o.wav"], "--revise must be >= 0"),
    (["--list", "--tpo-k", "5"], "unknown option --tpo-k (did you mean --top-k?)"),
    (["--list", "--text", "hi"], "unknown argument(s) --text: task inputs need a task (and no --list)"),
])
def test_generate_checks_every_argument_before_loading_anything(tmp_path, monkeypatch, capsys, argv, message):
    """An unknown flag, a misspelled input, a missing file or a bad option is reported at once (it came after
    the model had loaded, ~6 s): the checkpoint's tasks are read from its vocab.json and tasks.yaml only."""
    from unisono.cli import main

    def load(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(Pipeline, "from_pretrained", load)
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    assert main(["generate", *argv]) == 2
    err = capsys.readouterr().err
    assert message.replace("OUT", str(tmp_path)) in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_server_on_the_real_pipeline(pipe):
    import base64
    import io

    import soundfile as sf
    from fastapi.testclient import TestClient

    from unisono.serve import ServerLimits, create_app

    with TestClient(create_app(pipe, ServerLimits(max_output_seconds=1.0))) as c:
        tasks = {t["name"] for t in c.get("/tasks").json()["tasks"]}
        assert tasks == set(pipe.tasks)
        buf = io.BytesIO()
        sf.write(buf, np.full(8000, 0.05, np.float32), 16000, format="WAV")
        r = c.post("/generate", data={"task": "tts", "text": "Hello there.", "seed": "1", "max_duration": "0.5"},
                   files={"prompt": ("p.wav", buf.getvalue(), "audio/wav")})
        assert r.status_code == 200, r.text
        wav, sr = sf.read(io.BytesIO(r.content))
        assert sr == 16000 and wav.size <= 0.52 * 16000
        r = c.post("/generate", json={"task": "asr", "speech": base64.b64encode(buf.getvalue()).decode()})
        assert r.status_code == 200 and isinstance(r.json()["text"], str)
        r = c.post("/generate", json={"task": "tts", "text": "hi"})
        assert r.status_code == 422 and "prompt" in r.json()["error"]
        body = {"task": "text_to_sound", "caption": "A bell rings.", "seed": 2, "max_duration": 1.0, "top_k": 30}
        streamed = c.post("/generate", json={**body, "stream": True})
        assert streamed.status_code == 200 and streamed.headers["x-streamed"] == "frames"
        whole = c.post("/generate", json=body)
        a, sr = sf.read(io.BytesIO(streamed.content))
        b, _ = sf.read(io.BytesIO(whole.content))
        assert sr == 16000 and a.shape == b.shape and np.allclose(a, b, atol=2 / 32768)


def test_fuzzing_the_real_server_finds_no_5xx(pipe):
    from serve_helpers import fuzz_no_5xx

    from unisono.serve import ServerLimits, create_app

    app = create_app(pipe, ServerLimits(max_output_seconds=0.5, max_body_bytes=200_000))
    assert fuzz_no_5xx(app, max_examples=25) == []


def test_progress_is_reported_and_cancel_stops_generation(pipe):
    import threading

    from unisono.inference import GenerationCancelled

    seen = []
    inp = {"caption": "A bell rings."}
    pipe.generate("text_to_sound", seed=0, max_duration=0.4, progress=lambda n, total: seen.append((n, total)), **inp)
    assert seen and seen[0][0] == 1 and all(b[0] == a[0] + 1 for a, b in zip(seen, seen[1:]))
    assert all(total == seen[0][1] for _, total in seen) and seen[-1][0] <= seen[0][1]
    cancel = threading.Event()
    calls = []

    def stop_after_three(n, total):
        calls.append(n)
        if n == 3:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        pipe.generate_batch("text_to_sound", [inp], GenerationOptions(seed=0, max_duration=2.0), cancel=cancel,
                            progress=stop_after_three)
    assert max(calls) <= 4  # stopped at the frame after the event was set


def test_streaming_chunks_join_to_the_offline_output(pipe):
    inp = {"caption": "A bell rings."}
    opts = GenerationOptions(seed=4, max_duration=1.0, top_k=30)
    chunks = []
    streamed = pipe.generate_stream("text_to_sound", inp, opts, emit=chunks.append, chunk_frames=5)
    offline = pipe.generate_batch("text_to_sound", [inp], opts)[0]
    assert streamed.info["streamed"] and len(chunks) >= 1
    joined = np.concatenate(chunks)
    assert joined.shape == offline.wav.shape
    assert np.allclose(joined, offline.wav, atol=1e-4)
    if offline.info["frames"] > 5:
        assert len(chunks) > 1


@pytest.mark.parametrize("precision,ratio,tol", [("float16", 0.6, 1e-3), ("int8", 0.35, 2e-2)])
def test_reduced_precision_package_with_a_default_prompt(pipe, tiny_checkpoint, tmp_path, precision, ratio, tol):
    """``package(precision=float16|int8)`` shrinks the weight files and loads back into float32 models close
    to the original; an input shipped in ``defaults/`` is used when a request leaves it out."""
    import soundfile as sf
    import torch

    root = tiny_checkpoint.parent
    voice = tmp_path / "voice.wav"
    sf.write(voice, (0.1 * np.random.default_rng(3).standard_normal(16000)).astype(np.float32), 16000)
    out = Pipeline.package(root / "lm-delay", root / "shards", tmp_path / precision, codec_dir=root / "codec",
                           precision=precision, codec_precision="float16", defaults={"prompt": voice})
    full, small_file = tiny_checkpoint / "model.safetensors", out / "model.safetensors"
    assert small_file.stat().st_size < ratio * full.stat().st_size
    assert (out / "codec" / "model.safetensors").stat().st_size < 0.6 * (
        root / "codec" / "model.safetensors"
    ).stat().st_size
    small = Pipeline.from_pretrained(out)
    assert all(p.dtype == torch.float32 for p in small.lm.parameters())
    for (name, a), b in zip(pipe.lm.state_dict().items(), small.lm.state_dict().values()):
        err = float((a.float() - b.float()).abs().max())
        assert err <= tol * max(1.0, float(a.abs().max())), (name, err)
    opts = GenerationOptions(seed=4, max_duration=0.5)
    text = "The old baker slowly painted the red door."
    implicit = small.generate("tts", opts, text=text)
    explicit = small.generate("tts", opts, text=text, prompt=str(voice))
    assert np.array_equal(implicit.wav, explicit.wav)
    with pytest.raises(UnisonoError, match="prompt"):
        pipe.generate("tts", opts, text=text)  # no default shipped with this one


def test_a_package_carries_its_default_sampling_options(pipe, tiny_checkpoint, tmp_path):
    """``package(generation=...)``: the checkpoint's defaults for audio and text tasks (generation.json),
    used by default_options and the CLI, part of the checkpoint's identity; bad options are refused."""
    from unisono.eval.model_system import checkpoint_id

    root = tiny_checkpoint.parent
    out = Pipeline.package(root / "lm-delay", root / "shards", tmp_path / "cfg", codec_dir=root / "codec",
                           generation={"audio": {"guidance_scale": 3.0, "top_k": 20}})
    tuned = Pipeline.from_pretrained(out)
    assert tuned.default_options("tts").guidance_scale == 3.0 and tuned.default_options("tts").top_k == 20
    assert tuned.default_options("asr") == pipe.default_options("asr")  # text tasks: unchanged
    assert pipe.default_options("tts").guidance_scale == 1.0
    plain = Pipeline.package(root / "lm-delay", root / "shards", tmp_path / "plain", codec_dir=root / "codec")
    assert checkpoint_id(out) != checkpoint_id(plain)
    for bad, msg in (({"audio": {"guidance": 3}}, "unknown option"), ({"speech": {}}, "expected"),
                     ({"audio": {"top_k": -1}}, "top_k")):
        with pytest.raises(UnisonoError, match=msg):
            Pipeline.package(root / "lm-delay", root / "shards", tmp_path / "bad", codec_dir=root / "codec",
                             generation=bad)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()
