"""One-pass generation of a plan and then the audio (every pattern), the pipeline's plan output, and the
"generate, listen, revise" loop."""

import numpy as np
import pytest
import torch

from unisono.data.shards import collate_examples
from unisono.errors import UnisonoError
from unisono.inference import AudioOutput, Pipeline, target_phases
from unisono.lm import LMConfig, UnisonoLM
from unisono.lm.model import Phase
from unisono.options import GenerationOptions
from unisono.reasoning import Terms
from unisono.tasks import Segment, build_example, load_templates
from unisono.vocab import Vocab

K, CB = 2, 16
TASK = "text_to_sound_reasoning"


def setup_examples():
    tpls = load_templates()
    v = Vocab.build(tpls, num_codebooks=K, codebook_size=CB, bpe=30)
    g = torch.Generator().manual_seed(0)
    exs = []
    # same caption length (one batch), plans of 3 and 6 tokens, audio of 4 and 6 frames: rows switch apart
    for cap, plan, n in [([3, 4, 5], [7, 8, 9], 4), ([10, 11, 12], [13, 14, 15, 16, 17, 18], 6)]:
        segs = [
            Segment("bpe", ids=cap),
            Segment("bpe", ids=plan),
            Segment("codec", codes=torch.randint(0, CB, (K, n), generator=g)),
        ]
        exs.append(build_example(v, tpls[TASK], segs))
    return v, tpls[TASK], exs


@pytest.fixture(scope="module", params=["delay", "multiscale"])
def overfit(request):
    """A tiny LM of the pattern trained on two reasoning examples until it reproduces them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest on a shared machine
    torch.manual_seed(0)
    v, tpl, exs = setup_examples()
    lm = UnisonoLM.from_config(LMConfig(vocab_size=v.size, num_streams=K, pad_id=v.pad_id, pattern=request.param,
                                        d_model=32, n_layers=1, n_heads=2, max_seq_len=64))
    batch = collate_examples(exs, v.pad_id)
    opt = torch.optim.Adam(lm.parameters(), lr=2e-2)
    for _ in range(80):
        loss = lm.loss(batch["frames"], batch["loss_mask"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.eval()
    yield v, tpl, exs, lm
    torch.set_num_threads(threads)


def test_one_pass_generation_writes_the_plan_then_the_audio(overfit):
    v, tpl, exs, lm = overfit
    n_prompt = 2 + 5 + 1  # <start> <task> caption segment, then the plan's <bpe_start>
    prompt = torch.stack([e["frames"][:n_prompt] for e in exs])
    assert (prompt[:, -1, 0] == v.start_id("bpe")).all()
    new = lm.generate(prompt, 30, phases=target_phases(v, tpl), temperature=0)
    for row, ex in zip(new, exs):
        want = ex["frames"][n_prompt:-1]  # plan, <bpe_end>, <codec_start>, audio, <codec_end> (no <end>)
        n = want.shape[0]
        assert torch.equal(row[: n - 1], want[: n - 1])  # the rows switch to audio at their own frames
        assert int(row[n - 1, 0]) == v.end_id("codec") and (row[n:] == v.pad_id).all()
    assert new.shape[1] == exs[1]["frames"].shape[0] - n_prompt - 1  # the longest row ends the batch


def test_a_plan_is_ended_after_its_token_budget(overfit):
    v, tpl, exs, lm = overfit
    prompt = exs[1]["frames"][None, :8]
    new = lm.generate(prompt, 12, phases=target_phases(v, tpl, plan_max_tokens=2), temperature=0)[0]
    col = new[:, 0].tolist()
    assert col[:2] == exs[1]["frames"][8:10, 0].tolist()  # the plan's first two tokens
    assert col[2] == v.end_id("bpe") and col[3] == v.start_id("codec")
    assert (new[2, 1:] == v.pad_id).all()  # the end frame as training lays it out
    audio = new[4:]
    audio = audio[audio[:, 0] != v.end_id("codec")]
    audio = audio[audio[:, 0] != v.pad_id]
    for k in range(K):
        r = v.modality_range("codec", k)
        assert ((audio[:, k] >= r.start) & (audio[:, k] < r.stop)).all()


def test_phase_arguments_are_checked():
    v, tpl, exs = setup_examples()
    lm = UnisonoLM.from_config(LMConfig(vocab_size=v.size, num_streams=K, pad_id=v.pad_id, pattern="flat",
                                        d_model=16, n_layers=1, n_heads=2, max_seq_len=128))
    prompt = exs[0]["frames"][None, :8]
    phases = target_phases(v, tpl)
    with pytest.raises(UnisonoError, match="not both"):
        lm.generate(prompt, 4, phases=phases, end_id=v.end_id("codec"))
    with pytest.raises(UnisonoError, match="end_frame"):
        lm.generate(prompt, 4, phases=[Phase(phases[0].stream_mask, phases[0].end_id), phases[1]])
    with pytest.raises(UnisonoError, match="start_frame"):
        lm.generate(prompt, 4, phases=[phases[0], Phase(phases[1].stream_mask, phases[1].end_id)])
    # flat: random weights, sampled; the output still follows the phase layout
    new = lm.generate(prompt, 20, phases=target_phases(v, tpl, plan_max_tokens=3), seed=0)[0]
    col = new[:, 0].tolist()
    e = col.index(v.end_id("bpe"))
    assert e <= 3 and col[e + 1] == v.start_id("codec")
    assert all(v.range_of(i) == "bpe" for i in col[:e])


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return Pipeline.from_pretrained(tiny_checkpoint)


def test_pipeline_returns_the_plan_with_the_audio(pipe):
    assert pipe.tasks[TASK].output == "audio"
    v = pipe.vocab
    plan_ids = pipe.tok.bpe.encode("2 events: 0.4-1.3 s dog bark")
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, v.codebook_size, (v.num_codebooks, 7), generator=g)
    frames = torch.cat([
        torch.stack([v.token_frame(int(i)) for i in v.to_global("bpe", plan_ids)]),
        v.token_frame(v.end_id("bpe"))[None], v.token_frame(v.start_id("codec"))[None],
        torch.stack([v.to_global("codec", codes[k], codebook=k) for k in range(v.num_codebooks)], dim=1),
        v.token_frame(v.end_id("codec"))[None]])
    out = pipe.io(TASK).finish(frames)
    assert isinstance(out, AudioOutput) and out.plan == "2 events: 0.4-1.3 s dog bark" == out.info["plan"]
    assert out.info["frames"] == 7 and out.info["ended"]
    # sampled end to end (random weights): a plan string, audio within the bound; streaming gives the same
    opts = GenerationOptions(seed=2, max_duration=0.3, guidance_scale=1.0)
    a = pipe.generate(TASK, options=opts, caption="A dog barks at 0.4 s.")
    assert isinstance(a.plan, str) and a.duration <= 0.3 + 1 / 50 + 1e-6
    s = pipe.generate_stream(TASK, {"caption": "A dog barks at 0.4 s."}, opts)
    assert s.plan == a.plan and np.allclose(s.wav, a.wav, atol=1e-5)
    assert pipe.generate("text_to_sound", options=opts, caption="A dog barks.").plan is None


def test_revise_regenerates_on_disagreement_and_stops_on_agreement(pipe):
    opts = GenerationOptions(seed=10, max_duration=0.2, guidance_scale=1.0)
    request = "A dog barks at 0.4 s, then a bell rings at 2.1 s."
    captions = iter(["wind blowing", "a bell ringing", "a dog barking and a bell ringing", "never asked"])
    heard = []

    def captioner(wav, sr):
        heard.append(wav.copy())
        return next(captions)

    out = pipe.generate(TASK, options=opts, revise=5, captioner=captioner, caption=request)
    rounds = out.info["revise"]["rounds"]
    assert [r["agreement"] for r in rounds] == [0.0, 0.5, 1.0]  # stopped at the first agreement
    assert [r["seed"] for r in rounds] == [10, 11, 12] and out.info["round"] == 2
    assert out.info["revise"]["request_terms"] == ["event:bell", "event:dog_bark"]
    again = pipe.generate(TASK, options=opts.with_(seed=12), caption=request)
    assert np.array_equal(out.wav, again.wav) and out.plan == again.plan
    assert np.array_equal(heard[2], again.wav)
    # never agreeing: N more rounds, the best one kept (the earliest among equals)
    captions = iter(["wind", "a dog barking", "rain", "a bell"])
    out = pipe.generate_revised(TASK, {"caption": request}, opts, rounds=3, captioner=lambda w, sr: next(captions))
    assert [r["agreement"] for r in out.info["revise"]["rounds"]] == [0.0, 0.5, 0.0, 0.5]
    assert out.info["round"] == 1
    assert np.array_equal(out.wav, pipe.generate(TASK, options=opts.with_(seed=11), caption=request).wav)
    with pytest.raises(UnisonoError, match="audio outputs"):
        pipe.generate_revised("asr", {"speech": (np.zeros(1600, np.float32), 16000)}, rounds=1)


def test_cli_prints_the_plan_and_the_revision_rounds(tiny_checkpoint, tmp_path, capsys):
    from unisono.cli import main

    out = tmp_path / "out.wav"
    args = ["generate", TASK, "--checkpoint", str(tiny_checkpoint), "--caption", "A dog barks, then a bell rings.",
            "--seed", "4", "--max-duration", "0.2", "--guidance-scale", "1", "-o", str(out)]
    assert main(args + ["--revise", "1"]) == 0
    text = capsys.readouterr().out
    assert "plan: " in text and "request names: event:bell, event:dog_bark" in text
    assert "round 0 (seed 4)" in text and out.exists()
    assert main(args + ["--revise", "-1"]) == 2
    assert "--revise must be >= 0" in capsys.readouterr().err


def test_revise_needs_the_checkpoints_terms(pipe, monkeypatch):
    monkeypatch.setattr(pipe.tok, "terms", None)
    with pytest.raises(UnisonoError, match="terms.json"):
        pipe.generate_revised(TASK, {"caption": "a bell"}, rounds=1, captioner=lambda w, sr: "a bell")
    out = pipe.generate_revised(TASK, {"caption": "a bell"}, GenerationOptions(seed=1, max_duration=0.1), rounds=0,
                                captioner=lambda w, sr: "a bell", terms=Terms(["bell"], []))
    assert out.info["revise"]["request_terms"] == ["event:bell"]
