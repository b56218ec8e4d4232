"""Reasoning templates (a plan, then the audio), plans written from metadata, request terms, event metrics."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from unisono.data.sources import source_value
from unisono.errors import UnisonoError
from unisono.eval.reasoning import detect_events, edit_distance, event_sequence_scores, score_output
from unisono.reasoning import Terms, build_plan, parse_sound_plan
from unisono.tasks import (
    Segment,
    build_example,
    decode_example,
    load_templates,
    parse_templates,
    split_segments,
)
from unisono.vocab import Vocab

K = 2


def vocab(fill="pad"):
    return Vocab.build(load_templates(), num_codebooks=K, codebook_size=16, bpe=30, fill=fill)


@pytest.mark.parametrize("fill", ["pad", "repeat"])
def test_list_target_round_trip_and_loss_on_plan_and_audio(fill):
    v = vocab(fill)
    tpl = load_templates()["text_to_sound_reasoning"]
    assert [s.name for s in tpl.targets] == ["plan", "sound"] and tpl.target.modality == "codec"
    assert tpl.serves_cuts_of == "text_to_sound"
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (K, 5), generator=g)
    segs = [Segment("bpe", ids=[1, 2, 3]), Segment("bpe", ids=[4, 5, 6, 7]), Segment("codec", codes=codes)]
    ex = build_example(v, tpl, segs, "c1")
    col = ex["frames"][:, 0].tolist()
    # <start> <task> <bpe_start> 3 <bpe_end> <bpe_start> 4 <bpe_end> <codec_start> 5 <codec_end> <end>
    assert len(col) == 2 + 5 + 6 + 7 + 1
    assert col[7] == v.start_id("bpe") and col[12] == v.end_id("bpe") and col[13] == v.start_id("codec")
    assert col[-2] == v.end_id("codec")
    loss_rows = ex["loss_mask"].any(1).nonzero().flatten().tolist()
    assert loss_rows == list(range(8, 13)) + list(range(14, 20))  # plan body + end, audio body + end
    assert ex["cond_mask"].nonzero().flatten().tolist() == list(range(2, 7))
    assert not ex["cond_mask"][7:].any()
    task, raw = split_segments(v, ex["frames"])
    assert task == "text_to_sound_reasoning" and [m for m, _ in raw] == ["bpe", "bpe", "codec"]
    _, back = decode_example(v, ex)
    assert back[1].ids == [4, 5, 6, 7] and torch.equal(back[2].codes, codes)


def test_list_target_errors_and_single_item_list():
    base = {"conditions": [{"name": "c", "modality": "bpe", "source": "custom.caption"}]}
    one = parse_templates({"tasks": {"x": {**base, "target": [{"name": "s", "modality": "codec", "source": "audio"}]}}})
    assert one["x"].plan == () and one["x"].target.modality == "codec"
    with pytest.raises(UnisonoError, match="empty list"):
        parse_templates({"tasks": {"x": {**base, "target": []}}})
    same = [
        {"name": "a", "modality": "bpe", "source": "plan.sound"},
        {"name": "b", "modality": "bpe", "source": "text"},
    ]
    with pytest.raises(UnisonoError, match="differ in modality"):
        parse_templates({"tasks": {"x": {**base, "target": same}}})
    with pytest.raises(UnisonoError, match="needs a key"):
        parse_templates({"tasks": {"x": {**base, "target": [{"name": "p", "modality": "bpe", "source": "plan"},
                                                             {"name": "s", "modality": "codec", "source": "audio"}]}}})


def test_packaged_templates_keep_the_plan(tmp_path):
    from unisono.checkpoint import templates_yaml

    text = templates_yaml(load_templates())
    back = parse_templates(yaml.safe_load(text))
    assert back["text_to_sound_reasoning"] == load_templates()["text_to_sound_reasoning"]
    assert back["text_to_music_reasoning"].cuts_from == "text_to_music"


def scene_cut():
    params = {
        "events": [{"event": "bell", "start": 2.1, "end": 3.04}, {"event": "dog_bark", "start": 0.4, "end": 1.26}],
        "background": "pink noise",
    }
    return SimpleNamespace(custom={"kind": "scene", "params": params, "tasks": ["text_to_sound"]}, supervisions=[],
                           duration=5.0)


def test_plans_written_from_metadata_equal_the_expected_text():
    assert build_plan("sound", scene_cut()) == "2 events: 0.4-1.3 s dog bark; 2.1-3.0 s bell; background pink noise"
    sound = SimpleNamespace(custom={"params": {"event": "dog_bark", "count": 3, "f0_hz": 420}}, duration=2.5)
    assert build_plan("sound", sound) == "1 event: 0.2-2.2 s dog bark (count 3, f0 420 Hz)"
    music = SimpleNamespace(custom={"params": {"instrument": "cello", "tempo_bpm": 96, "key": "F#", "mode": "dorian",
                                               "contour": "arch", "register": "low", "drums": False, "mood": "x"}})
    assert (
        build_plan("music", music)
        == "tempo 96 BPM; key F# dorian; instrument cello; contour arch; register low; no drums"
    )
    assert build_plan("music", scene_cut()) is None and build_plan("sound", music) is None
    spec = load_templates()["text_to_sound_reasoning"].plan[0]
    assert source_value(spec, scene_cut()) == build_plan("sound", scene_cut())
    assert parse_sound_plan(build_plan("sound", scene_cut())) == [(0.4, 1.3, "dog_bark"), (2.1, 3.0, "bell")]
    with pytest.raises(UnisonoError, match="unknown plan kind"):
        build_plan("speech", scene_cut())


def test_tokenize_plans_the_reasoning_shards_from_the_cuts_of_their_source_task():
    from unisono.data.tokenize import plan_shards, plan_texts

    cut = scene_cut()
    cut.id = "s1"
    other = SimpleNamespace(id="m1", custom={"kind": "music", "tasks": ["text_to_music"], "params": {}})
    tpls = load_templates()
    plan = plan_shards({"train": [cut, other]}, tpls, ["text_to_sound_reasoning", "text_to_sound"], 8)
    assert {(j["task"], tuple(map(tuple, j["items"]))) for j in plan} == {
        ("text_to_sound", (("s1", 0),)), ("text_to_sound_reasoning", (("s1", 0),))}
    assert plan_texts([cut, other], tpls, ["text_to_sound_reasoning"]) == [build_plan("sound", cut)]


TERMS = Terms(["dog_bark", "knock", "phone_ring", "bell", "wind"], ["piano", "pan flute", "flute"])


def test_request_terms_and_agreement():
    req = "A dog barks at 0.4 s, then someone knocks at 1.2 s, over faint pink noise."
    assert TERMS.find(req) == {"event:dog_bark", "event:knock"}
    assert TERMS.find("Piano and pan flute; a telephone with two rings.") == {
        "instrument:piano", "instrument:pan flute", "event:phone_ring"}
    assert TERMS.agreement(req, "a large dog giving two barks and three knocks on a door") == 1.0
    assert TERMS.agreement(req, "a dog barking") == 0.5
    assert TERMS.agreement(req, "wind blowing") == 0.0
    assert TERMS.agreement("Some pleasant audio.", "anything") == 1.0
    # a model knows only its own corpus's classes: a word of another class names nothing
    assert Terms(["bell"], []).find("a dog barks and a bell rings") == {"event:bell"}


def test_terms_come_from_the_corpus_metadata_and_round_trip():
    cuts = [SimpleNamespace(custom={"params": {"event": "dog_bark"}}),
            SimpleNamespace(custom={"params": {"events": [{"event": "bell"}, {"event": "knock"}]}}),
            SimpleNamespace(custom={"params": {"instrument": "Cello", "tempo_bpm": 90}}),
            SimpleNamespace(custom={"kind": "speech"})]
    t = Terms.from_cuts(cuts)
    assert t.to_dict() == {"events": ["bell", "dog_bark", "knock"], "instruments": ["cello"]}
    assert Terms.from_dict(t.to_dict()).find("a cello and a bell") == {"instrument:cello", "event:bell"}
    with pytest.raises(UnisonoError, match="'events' and 'instruments'"):
        Terms.from_dict({"events": []})


def test_event_count_and_order_scores_on_hand_made_sequences():
    want = ["dog_bark", "bell", "rain"]
    s = event_sequence_scores(want, ["dog_bark", "bell", "rain"])
    assert s["event_count_acc"] == 1.0 and s["event_order_acc"] == 1.0 and s["event_seq_sim"] == 1.0
    s = event_sequence_scores(want, ["bell", "dog_bark", "rain"])  # right count and classes, wrong order
    assert s["event_count_acc"] == 1.0 and s["event_order_acc"] == 0.0 and s["event_recall"] == 1.0
    assert s["event_seq_sim"] == pytest.approx(1 - 2 / 3)
    s = event_sequence_scores(want, ["dog_bark", "rain"])  # one missing
    assert s["event_count_acc"] == 0.0 and s["event_count_abs_err"] == 1.0
    assert s["event_seq_sim"] == pytest.approx(2 / 3) and s["event_recall"] == pytest.approx(2 / 3)
    s = event_sequence_scores(want, [], prefix="plan")
    assert s["plan_count_acc"] == 0.0 and s["plan_seq_sim"] == 0.0 and s["plan_recall"] == 0.0
    assert edit_distance("kitten", "sitting") == 3 and edit_distance([], [1, 2]) == 2


def test_events_are_detected_in_time_order_and_scored_with_the_plan():
    from unisono.eval.metrics.classifier import AttributeClassifier
    from unisono.eval.metrics.frechet import mel_stats_embedding

    sr = 16000
    rng = np.random.default_rng(0)
    t = np.arange(int(0.4 * sr)) / sr
    low = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    high = (0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    pad = np.zeros(int(0.25 * sr), np.float32)
    feats = [mel_stats_embedding(np.concatenate([pad, x * rng.uniform(0.5, 1.5), pad]), sr)
             for x in (low, high) for _ in range(4)]
    clf = AttributeClassifier.fit(np.stack(feats), ["bell"] * 4 + ["whistle"] * 4)
    gap = np.zeros(int(0.5 * sr), np.float32)
    scene = np.concatenate([gap, high, gap, low, gap, high, gap])
    found = detect_events(scene, sr, clf)
    assert [e[2] for e in found] == ["whistle", "bell", "whistle"]
    assert found[0][0] == pytest.approx(0.5, abs=0.05) and found[1][0] == pytest.approx(1.4, abs=0.05)
    vals = score_output(
        ["whistle", "bell", "whistle"], scene, sr, clf, plan="2 events: 0.5-0.9 s whistle; 1.4-1.8 s bell"
    )
    assert (
        vals["event_order_acc"] == 1.0 and vals["plan_count_acc"] == 0.0 and vals["plan_recall"] == pytest.approx(2 / 3)
    )
    assert score_output(["bell"], np.zeros(0, np.float32), sr, clf)["event_count_acc"] == 0.0
    two_hits = np.concatenate([gap, low, gap[:4000], low, gap, high, gap])  # one event of two hits, then another
    assert [e[2] for e in detect_events(two_hits, sr, clf)] == ["bell", "whistle"]
    assert [e[2] for e in detect_events(two_hits, sr, clf, merge_same=False)] == ["bell", "bell", "whistle"]
