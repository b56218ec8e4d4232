"""`unisono dpo`: ranking into pairs, candidates and their training examples, preference tuning of a tiny
model that improves its rank metric on fresh samples, the tuned checkpoint, and one-line input errors."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from unisono.cli import main as cli_main
from unisono.inference import Pipeline
from unisono.options import GenerationOptions
from unisono.tasks import Segment, build_example, decode_example
from unisono.train.preference import (
    EVAL_SEED_OFFSET,
    RANK_METRICS,
    DPOSettings,
    candidate_example,
    collect_prompts,
    condition_segments,
    make_pairs,
    rank_metric,
    run_dpo,
    sample_candidates,
    score_output,
)

pytestmark = pytest.mark.usefixtures("one_thread")
NAN = float("nan")


def corpus_of(ckpt: Path) -> Path:
    return ckpt.parent / "corpus"  # tests/tiny_model.py builds the checkpoint beside its corpus


# ------------------------------------------------------------------------------------------ pure logic
def test_pairs_take_best_and_worst_skip_ties_and_unscored():
    scores = [
        [0.2, 0.9, 0.5, 0.1],  # best 1, worst 3
        [0.4, 0.4, 0.4],  # tie: no pair
        [NAN, 0.3, NAN, 0.7],  # nan ignored: best 3, worst 1
        [NAN, 0.5],  # a single scored candidate: no pair
        [0.6, 0.8, 0.8, 0.6],  # equal scores: the first of them wins on both ends
    ]
    assert make_pairs(scores, higher_is_better=True) == [(0, 1, 3), (2, 3, 1), (4, 1, 0)]
    # lower is better (e.g. WER): the roles swap
    assert make_pairs(scores, higher_is_better=False) == [(0, 3, 1), (2, 1, 3), (4, 0, 1)]
    # a minimum gap turns near-ties into skipped prompts
    assert make_pairs(scores, higher_is_better=True, min_gap=0.5) == [(0, 1, 3)]


def test_rank_metrics_combine_harness_values_and_know_their_tasks():
    spk = RANK_METRICS["wer+spk"]
    assert spk.combine({"wer": 0.25, "speaker_sim": 0.8, "cer": 0.1}) == pytest.approx(0.55)
    assert spk.higher_is_better and not RANK_METRICS["wer"].higher_is_better
    assert spk.better(0.6, 0.55) and RANK_METRICS["wer"].better(0.1, 0.2)
    assert rank_metric("wer+spk", "tts") is spk
    assert rank_metric("event_prob", "text_to_sound").classifier == "event"
    assert rank_metric("duration", "text_to_music").name == "duration"
    for bad_task in ("text_to_sound", "asr", "caption"):
        with pytest.raises(Exception, match="does not apply to task"):
            rank_metric("wer", bad_task)


def test_prompts_are_only_the_cuts_the_metric_can_score(tiny_checkpoint):
    from unisono.eval.metrics import Reference

    assert RANK_METRICS["event_prob"].scorable(Reference("a", attributes={"event": "bell", "n_events": 1}))
    assert not RANK_METRICS["event_prob"].scorable(Reference("b", attributes={"n_events": 3}))  # a scene
    assert RANK_METRICS["events"].scorable(Reference("b", attributes={"n_events": 3}))
    assert RANK_METRICS["duration"].scorable(Reference("c"))
    pipe = Pipeline.from_pretrained(tiny_checkpoint)
    opts = GenerationOptions(top_k=30, guidance_scale=1.0, max_duration=1.5)
    corpus = corpus_of(tiny_checkpoint)
    every = collect_prompts(pipe, "text_to_sound", corpus, "train", None, 0, opts)
    with_event = collect_prompts(pipe, "text_to_sound", corpus, "train", None, 0, opts, RANK_METRICS["event_prob"])
    assert {p.cut_id for p in with_event} == {p.cut_id for p in every if "event" in p.ref.attributes}
    assert 0 < len(with_event) < len(every)  # the corpus's scenes (several events) are left out


def test_score_output_duration_and_empty_outputs():
    from unisono.eval.metrics import Reference

    ref = Reference("x", audio=np.zeros(16000 * 2, np.float32))
    dur = RANK_METRICS["duration"]
    assert score_output(dur, np.zeros(24000, np.float32), 24000, ref) == pytest.approx(1.0)  # 1 s vs 2 s
    assert score_output(dur, np.zeros(0, np.float32), 16000, ref) == pytest.approx(2.0)  # empty: all missing
    assert score_output(dur, np.zeros(48000, np.float32), 16000, ref) == pytest.approx(1.0)  # too long by 1 s


def test_class_probability_ranks_by_the_requested_class(monkeypatch):
    from eval_audio import SR, add_noise, tone

    from unisono.eval.metrics import Reference
    from unisono.eval.metrics import classifier as C
    from unisono.eval.metrics.frechet import mel_stats_embedding

    train = [(tone(200 + 10 * i), "hum") for i in range(5)] + \
        [(add_noise(np.zeros(SR, np.float32) + 1e-3, -20, seed=i), "hiss") for i in range(5)]
    clf = C.AttributeClassifier.fit(np.stack([mel_stats_embedding(w, SR) for w, _ in train]), [y for _, y in train])
    C.register_classifier("event", clf)
    m = RANK_METRICS["event_prob"]
    hum, hiss = tone(230), add_noise(np.zeros(SR, np.float32) + 1e-3, -20, seed=99)
    p_hum = score_output(m, hum, SR, Reference("a", attributes={"event": "hum"}))
    p_hiss = score_output(m, hum, SR, Reference("a", attributes={"event": "hiss"}))
    assert p_hum > 0.9 and p_hum + p_hiss == pytest.approx(1.0, abs=1e-5)  # two classes: a distribution
    # ranked as a user means it: for a "hum" request the tone beats the noise, for "hiss" the reverse
    want_hum, want_hiss = Reference("r", attributes={"event": "hum"}), Reference("r", attributes={"event": "hiss"})
    assert score_output(m, hum, SR, want_hum) > score_output(m, hiss, SR, want_hum)
    assert score_output(m, hiss, SR, want_hiss) > score_output(m, hum, SR, want_hiss)
    assert math.isnan(score_output(m, hum, SR, Reference("c", attributes={"event": "gong"})))  # unseen class
    assert score_output(RANK_METRICS["event"], hum, SR, want_hum) == 1.0
    C.register_classifier("event", None)


# ------------------------------------------------------------------------------------------ candidates
def test_candidates_equal_pipeline_samples_and_examples_follow_the_template(tiny_checkpoint):
    pipe = Pipeline.from_pretrained(tiny_checkpoint)
    opts = GenerationOptions(top_k=30, guidance_scale=1.0, max_duration=1.5)
    prompts = collect_prompts(pipe, "tts", corpus_of(tiny_checkpoint), "train", 2, seed=0, base_options=opts)
    assert len(prompts) == 2 and prompts[0].cut_id < prompts[1].cut_id
    p = prompts[0]
    seeds = [7, 8, 9]
    cands = sample_candidates(pipe, "tts", p, seeds)
    # each candidate is what the public API gives for its seed
    for c in cands:
        out = pipe.generate("tts", options=p.options.with_(seed=c.seed), **p.inputs)
        assert out.info["frames"] == c.codes.shape[-1] and out.info["ended"] == c.ended
        np.testing.assert_allclose(out.wav, c.wav, atol=1e-6)
    assert len({tuple(c.codes.flatten().tolist()) for c in cands}) == 3  # distinct seeds, distinct samples

    conds = condition_segments(pipe, "tts", p.inputs)
    prep = pipe.io("tts").prepare(dict(p.inputs), p.options)
    for c in cands:
        ex = candidate_example(pipe, "tts", conds, c, "x")
        full = build_example(pipe.vocab, pipe.templates["tts"], conds + [Segment("codec", codes=c.codes)], "x")
        n = ex["frames"].shape[0]
        # a prefix of the template's example, with its loss mask
        assert torch.equal(ex["frames"], full["frames"][:n]) and torch.equal(ex["cond_mask"], full["cond_mask"][:n])
        assert torch.equal(ex["loss_mask"], full["loss_mask"][:n])
        # the conditioning part is exactly the prompt the model was sampled from
        assert torch.equal(ex["frames"][: prep.prompt.shape[0]], prep.prompt)
        # the target's codes are the candidate's
        task, segs = decode_example(pipe.vocab, full)
        assert task == "tts" and torch.equal(segs[-1].codes, c.codes)
        # trimmed: <end> (no loss) and, for a candidate cut at the length limit, the <codec_end> it never sampled
        end_frame = full["frames"].shape[0] - 2
        trimmed_loss = (full["loss_mask"][n:].any(-1).nonzero()[:, 0] + n).tolist()
        assert (n, trimmed_loss) == ((end_frame + 1, []) if c.ended else (end_frame, [end_frame]))
        body = ex["loss_mask"].any(-1).nonzero()[:, 0]
        assert len(body) == c.codes.shape[-1] + int(c.ended)


# ------------------------------------------------------------------------------------------ tuning
TASK = "text_to_sound"  # no length floor (unlike tts): the untrained model's outputs end far too early


def _duration_errors(ckpt, prompts, cuts_by_id, seeds) -> dict:
    """Independent check: |output duration - cut duration| (s) of fresh samples via the public API."""
    pipe = Pipeline.from_pretrained(ckpt)
    out = {}
    for p in prompts:
        errs = []
        for s in seeds:
            o = pipe.generate(TASK, options=p.options.with_(seed=s), **p.inputs)
            errs.append(abs(o.duration - cuts_by_id[p.cut_id].duration))
        out[p.cut_id] = errs
    return out


def test_preference_tuning_improves_the_rank_metric_and_writes_a_loadable_checkpoint(tiny_checkpoint, tmp_path):
    from unisono.eval.corpus import load_corpus_cuts

    corpus = corpus_of(tiny_checkpoint)
    out = tmp_path / "tuned"
    s = DPOSettings(task=TASK, rank_by="duration", split="train", prompts=6, candidates=4, eval_split="train",
                    eval_prompts=6, eval_samples=2, steps=20, lr=1e-3, beta=0.1, ce_weight=0.1, batch_size=6,
                    max_duration=3.0, progress=False)
    rep = run_dpo(tiny_checkpoint, corpus, out, s)
    # the report on disk is the one returned; pairs were made and trained on
    assert json.loads((out / "dpo_report.json").read_text()) == json.loads(json.dumps(rep))
    assert rep["pairs"] >= 4 and rep["steps"] == 20 and len(rep["history"]) == 20
    assert rep["history"][0]["margin"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at the start
    assert rep["final"]["accuracy"] == 1.0 and rep["final"]["margin"] > 1.0
    rows = [json.loads(line) for line in (out / "dpo_pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and sum("chosen" in r for r in rows) == rep["pairs"]
    for r in rows:
        if "chosen" in r:  # duration error: lower is better
            assert r["scores"][r["chosen"]] < r["scores"][r["rejected"]]
            assert r["scores"][r["chosen"]] == min(x for x in r["scores"] if x is not None)

    # fresh samples (seeds never used for the pairs), computed independently through the public API
    ev = rep["eval"]
    seeds = [EVAL_SEED_OFFSET + j for j in range(2)]
    cuts = {c.id: c for c in load_corpus_cuts(corpus, "train")}
    prompts = collect_prompts(Pipeline.from_pretrained(tiny_checkpoint), TASK, corpus, "train", 6, 0,
                              GenerationOptions(top_k=30, guidance_scale=1.0, max_duration=3.0))
    before = _duration_errors(tiny_checkpoint, prompts, cuts, seeds)
    after = _duration_errors(out, prompts, cuts, seeds)
    for cut_id in before:  # the report's per-prompt figures are what a user of each checkpoint gets
        np.testing.assert_allclose(ev["before"]["per_prompt"][cut_id], before[cut_id], atol=2e-3)
        np.testing.assert_allclose(ev["after"]["per_prompt"][cut_id], after[cut_id], atol=2e-3)
    mean_before = float(np.mean([v for vs in before.values() for v in vs]))
    mean_after = float(np.mean([v for vs in after.values() for v in vs]))
    assert mean_after < mean_before - 0.2, (mean_before, mean_after)
    assert ev["improved"] and ev["before"]["mean"] == pytest.approx(mean_before, abs=2e-3)

    # the tuned checkpoint: loadable, same config and vocabulary, different weights
    tuned, orig = Pipeline.from_pretrained(out), Pipeline.from_pretrained(tiny_checkpoint)
    assert tuned.lm.cfg == orig.lm.cfg and sorted(tuned.tasks) == sorted(orig.tasks)
    assert (out / "vocab.json").read_bytes() == (tiny_checkpoint / "vocab.json").read_bytes()
    diff = [float((a - b).abs().max()) for a, b in zip(tuned.lm.parameters(), orig.lm.parameters())]
    assert max(diff) > 0
    assert not (tmp_path / "tuned.partial").exists()


@pytest.mark.slow
def test_speech_ranking_by_wer_and_speaker_similarity_through_the_cli(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "o"
    assert cli_main(["dpo", "--checkpoint", str(tiny_checkpoint), "--data", str(corpus_of(tiny_checkpoint)),
                     "--out", str(out), "--task", "tts", "--rank-by", "wer+spk", "--prompts", "2", "--candidates", "3",
                     "--steps", "2", "--eval-prompts", "1", "--max-duration", "2", "--no-progress"]) == 0
    rep = json.loads((out / "dpo_report.json").read_text())
    rows = [json.loads(line) for line in (out / "dpo_pairs.jsonl").read_text().splitlines()]
    assert rep["rank_by"] == "wer+spk" and rep["higher_is_better"] and rep["candidates_scored"] == 6
    for r in rows:  # speaker similarity minus WER lies in [-1 - max WER, 1]
        assert all(x is None or -3.0 <= x <= 1.0 for x in r["scores"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pairs"] == rep["pairs"]
    assert Pipeline.from_pretrained(out).tasks.keys() == Pipeline.from_pretrained(tiny_checkpoint).tasks.keys()


# ------------------------------------------------------------------------------------------ errors
def _dpo(ckpt, corpus, out, *extra):
    return cli_main(["dpo", "--checkpoint", str(ckpt), "--data", str(corpus), "--out", str(out), "--no-progress",
                     "--steps", "1", "--prompts", "1", "--eval-prompts", "0", *extra])


@pytest.mark.parametrize("args, message", [
    (["--task", "nope", "--rank-by", "duration"], "unknown task 'nope'"),
    (["--task", "tts", "--rank-by", "loudness"], "unknown ranking metric 'loudness'"),
    (["--task", "tts", "--rank-by", "event"], "metric 'event' does not apply to task 'tts'"),
    (["--task", "asr", "--rank-by", "duration"], "does not apply to task 'asr'"),
    (["--task", "tts", "--rank-by", "duration", "--candidates", "1"], "--candidates must be at least 2"),
    (["--task", "tts", "--rank-by", "duration", "--split", "empty"], "no cut of split 'empty'"),
])
def test_bad_input_is_one_line_error(tiny_checkpoint, tmp_path, capsys, args, message):
    corpus = tmp_path / "corpus"
    shutil.copytree(corpus_of(tiny_checkpoint) / "manifests", corpus / "manifests", symlinks=True)
    (corpus / "manifests" / "empty").mkdir()
    (corpus / "manifests" / "empty" / "cuts.jsonl").write_text("")
    assert _dpo(tiny_checkpoint, corpus, tmp_path / "out", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_existing_out_and_missing_corpus_are_refused(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _dpo(tiny_checkpoint, corpus_of(tiny_checkpoint), out, "--task", "tts", "--rank-by", "duration") == 2
    assert "already exists" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert _dpo(tiny_checkpoint, tmp_path / "nothing", tmp_path / "o2", "--task", "tts", "--rank-by", "duration") == 2
    assert "not a corpus" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ settings, resume
REPO = Path(__file__).resolve().parents[1]


def test_dpo_settings_from_yaml_and_flags_over_them(tmp_path):
    import argparse

    from unisono.cli.dpo import add_arguments, settings_from_args
    from unisono.errors import UnisonoError

    s = DPOSettings.load(REPO / "configs" / "dpo" / "tts_wer_spk.yaml").validate()
    assert (s.task, s.rank_by, s.candidates, s.steps, s.nonfinite) == ("tts", "wer+spk", 4, 200, "skip")
    assert rank_metric(s.rank_by, s.task).name == "wer+spk"
    f = tmp_path / "d.yaml"
    f.write_text("task: tts\nrank_by: duration\nsteps: 5\nbeta: 0.2\n")
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--config", str(f), "--checkpoint", "c", "--data", "d", "--out", "o", "--steps", "3",
                         "--no-progress"])
    s = settings_from_args(args)
    assert (s.task, s.rank_by, s.steps, s.beta, s.progress, s.candidates) == ("tts", "duration", 3, 0.2, False, 4)
    f.write_text("task: tts\nrank_by: duration\nranking: wer\n")
    with pytest.raises(UnisonoError, match=r"unknown keys \['ranking'\]") as e:
        DPOSettings.load(f)
    assert "\n" not in str(e.value)
    with pytest.raises(UnisonoError, match="needs a task and a ranking metric"):
        DPOSettings(rank_by="wer").validate()
    with pytest.raises(UnisonoError, match="nonfinite must be 'skip' or 'stop'"):
        DPOSettings(task="tts", rank_by="wer", nonfinite="ignore").validate()


def test_an_interrupted_dpo_run_resumes_without_sampling_again(tiny_checkpoint, tmp_path, monkeypatch,
                                                               interrupt_at_step):
    from unisono.train import preference

    corpus = corpus_of(tiny_checkpoint)
    s = DPOSettings(task=TASK, rank_by="duration", split="train", prompts=4, candidates=3, eval_prompts=0, steps=6,
                    save_every=2, lr=1e-3, batch_size=2, max_duration=2.0, progress=False)
    full = run_dpo(tiny_checkpoint, corpus, tmp_path / "full", s)
    interrupt_at_step(5)  # in step 5: the state of step 4 is the last saved one
    with pytest.raises(KeyboardInterrupt):
        run_dpo(tiny_checkpoint, corpus, tmp_path / "b", s)
    monkeypatch.undo()
    state = torch.load(tmp_path / "b.resume" / "state.pt", weights_only=True)
    assert [h["step"] for h in state["history"]] == [1, 2, 3, 4] and len(state["ranking"]["pairs"]) == full["pairs"]
    assert not (tmp_path / "b").exists()
    monkeypatch.setattr(preference, "rank_candidates", lambda *a, **k: pytest.fail("sampled again"))
    rep = run_dpo(tiny_checkpoint, corpus, tmp_path / "b", s)
    assert rep["history"] == full["history"] and rep["mean_pair_gap"] == full["mean_pair_gap"]
    a, b = Pipeline.from_pretrained(tmp_path / "full").lm, Pipeline.from_pretrained(tmp_path / "b").lm
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n
    assert not (tmp_path / "b.resume").exists()
    assert (tmp_path / "b" / "dpo_pairs.jsonl").read_text() == (tmp_path / "full" / "dpo_pairs.jsonl").read_text()
