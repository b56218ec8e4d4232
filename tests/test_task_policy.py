"""Per-task policy lives in the templates: a task defined only in YAML gets its output-length bound, its
evaluation metrics, its copy-the-input baseline and its DPO ranking; preference tuning runs on a reasoning
task (a plan, then the audio) end to end."""

import json

import numpy as np
import pytest
import torch

from unisono.cli import main as cli_main
from unisono.errors import UnisonoError
from unisono.eval.corpus import build_items, copy_input_system, load_corpus_cuts, select_cuts
from unisono.inference import Pipeline, TaskIO
from unisono.options import GenerationOptions
from unisono.tasks import SAME_LENGTH_RATIO, parse_templates
from unisono.train.preference import rank_metric

pytestmark = pytest.mark.usefixtures("one_thread")

YAML_TASK = {"tasks": {"clean_up": {
    "description": "noisy speech -> clean speech (a task the built-in templates do not have)",
    "conditions": [{"name": "noisy", "modality": "codec", "source": "recording.noisy"}],
    "target": {"name": "clean", "modality": "codec", "source": "audio"},
    "kinds": ["noisy"], "length_from": "noisy", "baseline_input": "noisy", "metrics": ["pesq", "mel"]}}}


def test_a_task_defined_only_in_yaml_gets_length_bound_metrics_baseline_and_ranking(tiny_checkpoint):
    tpl = parse_templates(YAML_TASK)["clean_up"]
    pipe = Pipeline.from_pretrained(tiny_checkpoint)
    io = TaskIO(tpl, pipe.vocab.with_task("clean_up"), pipe.tok, pipe.codec, pipe.lm)
    # the output-length rule: 0.8-1.2 x the noisy input's frames (1 s = 50 frames)
    prep = io.prepare({"noisy": (np.full(16000, 0.05, np.float32), 16000)}, GenerationOptions(max_duration=8.0))
    assert prep.min_new == int(50 * SAME_LENGTH_RATIO[0]) and prep.max_new == int(50 * SAME_LENGTH_RATIO[1]) + 5
    # evaluation: the cuts it serves, its baseline input, its metrics
    corpus = tiny_checkpoint.parent / "corpus"
    cuts = select_cuts(load_corpus_cuts(corpus, "train"), tpl, 2, 0)
    assert cuts and all(c.custom["kind"] == "noisy" for c in cuts)
    wav, sr = copy_input_system(tpl, cuts[0])
    ref, _ = build_items(tpl, cuts[0], prompts=None)[0]
    assert sr == 16000 and np.array_equal(ref.condition, wav) and wav.size == cuts[0].custom["noisy"].num_samples
    # DPO: a metric the template lists ranks it; one it does not is refused
    assert rank_metric("mel", tpl).name == "mel"
    with pytest.raises(UnisonoError, match="does not apply to task 'clean_up'"):
        rank_metric("wer", tpl)


def test_policy_keys_are_checked():
    base = YAML_TASK["tasks"]["clean_up"]
    for key, value, message in (("length_from", "nope", "length_from must name an audio condition"),
                                ("baseline_input", "clean", "baseline_input must name an audio condition"),
                                ("metrics", "pesq", "metrics must be a list"), ("speech", "yes", "speech must be")):
        with pytest.raises(UnisonoError, match=message):
            parse_templates({"tasks": {"x": {**base, key: value}}})


def test_preference_tuning_runs_on_a_reasoning_task(tiny_checkpoint, tmp_path, capsys):
    task = "text_to_sound_reasoning"
    out = tmp_path / "tuned"
    assert cli_main(["dpo", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_checkpoint.parent / "corpus"),
                     "--out", str(out), "--task", task, "--rank-by", "duration", "--prompts", "3", "--candidates",
                     "3", "--steps", "2", "--eval-prompts", "0", "--max-duration", "1", "--no-progress"]) == 0
    rep = json.loads((out / "dpo_report.json").read_text())
    assert rep["task"] == task and rep["pairs"] >= 1 and len(rep["history"]) == 2
    tuned = Pipeline.from_pretrained(out)
    assert task in tuned.tasks and tuned.templates[task].plan
    # a candidate's training example holds the caption, the plan it wrote and its audio, in the template's order
    from unisono.train.preference import Prompt, candidate_example, sample_candidates

    opts = GenerationOptions(max_duration=1.0)
    p = Prompt("c", {"caption": "A dog barks twice."}, None, opts)
    cands = sample_candidates(tuned, task, p, [1, 2])
    io = tuned.io(task)
    prep = io.prepare(dict(p.inputs), opts)
    v = tuned.vocab
    for c in cands:
        ex = candidate_example(tuned, task, prep.conditions, c, "x")
        n0 = prep.prompt.shape[0]  # the prompt ends with the plan's start token
        plan = c.decoded.targets[0].ids
        assert torch.equal(ex["frames"][:n0], prep.prompt)
        assert ex["frames"][n0 : n0 + len(plan), 0].tolist() == v.to_global("bpe", plan).tolist()
        assert ex["frames"][n0 + len(plan), 0] == v.end_id("bpe")
        assert ex["frames"][n0 + len(plan) + 1, 0] == v.start_id("codec")
        assert io.text("bpe", ex["frames"][n0 : n0 + len(plan)]) == c.decoded.plans[0]
        assert ex["loss_mask"][n0 : n0 + len(plan) + 1].any(-1).all()  # the plan carries the loss too
