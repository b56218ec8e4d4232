import pytest
import torch
import yaml

from unisono.errors import UnisonoError
from unisono.tasks import Segment, build_example, decode_example, load_templates, parse_templates, split_segments
from unisono.vocab import Vocab

ALL_TASKS = {"tts", "vc", "se", "tse", "svs", "text_to_sound", "text_to_music", "audio_edit", "dereverb",
             "instruct_tts", "speech_edit", "asr", "caption", "audio_qa"}
K = 3


def vocab(fill="pad", tasks=None):
    return Vocab.build(tasks or load_templates(), num_codebooks=K, codebook_size=64, phones=40, bpe=300,
                       midi=229, semantic=16, fill=fill)


def random_segment(modality, g, n):
    if modality == "codec":
        return Segment("codec", codes=torch.randint(0, 64, (K, n), generator=g))
    if modality == "phones":
        return Segment("phones", ids=torch.randint(0, 40, (n,), generator=g).tolist())
    if modality == "bpe":
        return Segment("bpe", ids=torch.randint(0, 300, (n,), generator=g).tolist())
    if modality == "semantic":
        return Segment("semantic", ids=torch.randint(0, 16, (n,), generator=g).tolist())
    if modality == "midi":
        return Segment(
            "midi", ids=[("midi", 60), ("midi", 140), ("phones", 3), ("phones", 7), ("midi", 128), ("midi", 130)]
        )
    return Segment("text_emb", vectors=torch.randn(n, 8, generator=g))


def test_templates_cover_every_task_of_the_corpus():
    assert set(load_templates()) == ALL_TASKS | {"text_to_sound_reasoning", "text_to_music_reasoning"}


@pytest.mark.parametrize("fill", ["pad", "repeat"])
@pytest.mark.parametrize("task", sorted(ALL_TASKS))
def test_every_template_builds_and_decodes_back(task, fill):
    v = vocab(fill)
    tpl = load_templates()[task]
    g = torch.Generator().manual_seed(sum(map(ord, task)))
    segs = [random_segment(s.modality, g, 5 + 3 * i) for i, s in enumerate(tpl.segments)]
    ex = build_example(v, tpl, segs, "cut-1")
    T = ex["frames"].shape[0]
    assert ex["frames"].shape == (T, K) and ex["frames"].dtype == torch.long
    assert ex["loss_mask"].shape == (T, K) and ex["cond_mask"].shape == (T,)
    assert int(ex["frames"].min()) >= 0 and int(ex["frames"].max()) < v.size
    name, back = decode_example(v, ex)
    assert name == task and len(back) == len(segs)
    for a, b in zip(segs, back):
        assert a.modality == b.modality
        if a.modality == "codec":
            assert torch.equal(a.codes, b.codes)
        elif a.modality == "text_emb":
            assert torch.equal(a.vectors, b.vectors)
        else:
            assert list(a.ids) == list(b.ids)
    # layout: <start> <task> ... <end>; the target segment ends the sequence
    col = ex["frames"][:, 0]
    assert col[0] == v.special_id("start") and col[1] == v.task_id(task) and col[-1] == v.special_id("end")
    tgt = tpl.target.modality
    assert col[-2] == v.end_id(tgt)
    # loss: exactly the target body and its end token
    n_tgt = segs[-1].codes.shape[1] if tgt == "codec" else len(segs[-1].ids)
    rows = ex["loss_mask"].any(1).nonzero().flatten()
    assert rows.tolist() == list(range(T - 2 - n_tgt, T - 1))
    if tgt == "codec" or fill == "repeat":
        assert ex["loss_mask"][T - 2 - n_tgt : T - 2].all()
    else:  # padded streams of token frames carry no loss
        assert not ex["loss_mask"][:, 1:].any()
    # conditions: every frame between <task> and the target's start token
    assert ex["cond_mask"].nonzero().flatten().tolist() == list(range(2, T - 3 - n_tgt))


def test_pad_fill_puts_non_audio_tokens_in_stream_zero_only():
    v = vocab("pad")
    tpl = load_templates()["asr"]
    g = torch.Generator().manual_seed(0)
    ex = build_example(v, tpl, [random_segment("codec", g, 4), random_segment("bpe", g, 3)])
    f = ex["frames"]
    text_rows = f[:, 0] < v.ranges["codec_0"].start
    assert (f[text_rows, 1:] == v.pad_id).all()
    assert not (f[~text_rows] == v.pad_id).any()


def test_masked_frames_round_trip_and_carry_no_loss():
    v = vocab()
    tpl = load_templates()["speech_edit"]
    g = torch.Generator().manual_seed(1)
    ctx = random_segment("codec", g, 10)
    ctx.mask = torch.zeros(10, dtype=torch.bool)
    ctx.mask[3:6] = True
    segs = [random_segment("phones", g, 4), ctx, random_segment("codec", g, 8)]
    ex = build_example(v, tpl, segs)
    assert int((ex["frames"] == v.special_id("mask")).all(1).sum()) == 3
    _, back = decode_example(v, ex)
    assert torch.equal(back[1].mask, ctx.mask)
    assert (back[1].codes[:, 3:6] == -1).all()
    assert torch.equal(back[1].codes[:, ~ctx.mask], ctx.codes[:, ~ctx.mask])


def test_loss_all_covers_conditions_too():
    data = {"version": 1, "tasks": {"asr_all": {"loss": "all", "conditions": [{"modality": "codec", "source": "audio"}],
                                                  "target": {"modality": "bpe", "source": "text"}}}}
    tpl = parse_templates(data)["asr_all"]
    v = vocab(tasks=["asr_all"])
    g = torch.Generator().manual_seed(2)
    ex = build_example(v, tpl, [random_segment("codec", g, 4), random_segment("bpe", g, 3)])
    assert int(ex["loss_mask"].any(1).sum()) == 4 + 1 + 3 + 1


def test_new_task_from_yaml_needs_no_code(tmp_path):
    path = tmp_path / "extra.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "tasks": {"voice_describe": {
        "conditions": [{"name": "speech", "modality": "codec", "source": "audio"}],
        "target": {"name": "description", "modality": "bpe", "source": "custom.caption"}}}}))
    templates = load_templates([path])
    assert "voice_describe" in templates and ALL_TASKS <= set(templates)
    v = vocab(tasks=templates)
    g = torch.Generator().manual_seed(3)
    ex = build_example(v, templates["voice_describe"], [random_segment("codec", g, 4), random_segment("bpe", g, 2)])
    assert split_segments(v, ex["frames"])[0] == "voice_describe"


@pytest.mark.parametrize("bad, match", [
    ({"target": {"modality": "codec", "source": "text"}}, "cannot be made"),
    ({"target": {"modality": "video", "source": "audio"}}, "modality 'video'"),
    ({"target": {"modality": "bpe", "source": "custom"}}, "needs a key"),
    ({"target": {"modality": "bpe", "source": "text", "sconds": 3}}, "unknown key"),
    ({"conditions": [{"modality": "bpe", "source": "text"}]}, "needs a target"),
    ({"target": {"modality": "text_emb", "source": "text"}}, "cannot be a target"),
    ({"target": {"modality": "bpe", "source": "text"}, "loss": "some"}, "loss must be"),
])
def test_bad_templates_are_refused(bad, match):
    with pytest.raises(UnisonoError, match=match):
        parse_templates({"version": 1, "tasks": {"t": bad}})


def test_wrong_segment_modality_is_refused():
    v = vocab()
    g = torch.Generator().manual_seed(4)
    with pytest.raises(UnisonoError, match="must be codec"):
        build_example(v, load_templates()["asr"], [random_segment("bpe", g, 3), random_segment("bpe", g, 3)])


FEAT_TASK = {"version": 1, "tasks": {"asr_feat": {
    "conditions": [{"name": "speech", "modality": "codec", "source": "audio"},
                   {"name": "speech_feat", "modality": "audio_feat", "source": "audio"},
                   {"name": "prompt_feat", "modality": "audio_feat", "source": "speaker_prompt", "seconds": 1.0}],
    "target": {"modality": "bpe", "source": "text"}}}}


@pytest.mark.parametrize("fill", ["pad", "repeat"])
def test_audio_feat_conditions_build_and_decode_back(fill):
    tpl = parse_templates(FEAT_TASK)["asr_feat"]
    assert [c.modality for c in tpl.conditions] == ["codec", "audio_feat", "audio_feat"]
    v = vocab(fill, tasks=["asr_feat"])
    g = torch.Generator().manual_seed(4)
    speech, prompt = torch.randn(6, 5, generator=g), torch.randn(3, 5, generator=g)
    segs = [random_segment("codec", g, 6), Segment("audio_feat", vectors=speech),
            Segment("audio_feat", vectors=prompt), random_segment("bpe", g, 4)]
    ex = build_example(v, tpl, segs, "cut-2")
    assert torch.equal(ex["audio_feat"], torch.cat([speech, prompt])) and "text_emb" not in ex
    rows = (ex["frames"][:, 0] == v.placeholder_id("audio_feat")).nonzero().flatten()
    assert len(rows) == 9 and bool(ex["cond_mask"][rows].all()) and not bool(ex["loss_mask"][rows].any())
    assert (ex["frames"][rows, 1:] == (v.pad_id if fill == "pad" else v.placeholder_id("audio_feat"))).all()
    task, back = decode_example(v, ex)
    assert task == "asr_feat" and [s.modality for s in back] == ["codec", "audio_feat", "audio_feat", "bpe"]
    assert torch.equal(back[1].vectors, speech) and torch.equal(back[2].vectors, prompt)
    assert torch.equal(back[0].codes, segs[0].codes) and back[3].ids == segs[3].ids


def test_audio_feat_segments_refuse_bad_vectors():
    tpl = parse_templates(FEAT_TASK)["asr_feat"]
    v = vocab(tasks=["asr_feat"])
    g = torch.Generator().manual_seed(5)
    base = [random_segment("codec", g, 6), Segment("audio_feat", vectors=torch.randn(6, 5)), None,
            random_segment("bpe", g, 4)]
    for bad, match in ((torch.zeros(3, dtype=torch.long), "FloatTensor"), (None, "FloatTensor"),
                       (torch.randn(2, 7), "different sizes")):
        segs = list(base)
        segs[2] = Segment("audio_feat", vectors=bad)
        with pytest.raises(UnisonoError, match=match):
            build_example(v, tpl, segs)


@pytest.mark.parametrize("bad, match", [
    ({"target": {"modality": "audio_feat", "source": "audio"}}, "continuous.*cannot be a target"),
    ({"conditions": [{"modality": "audio_feat", "source": "text"}], "target": {"modality": "bpe", "source": "text"}},
     "cannot be made from source text"),
    ({"conditions": [{"modality": "codec", "source": "audio"}, {"modality": "audio_feat", "source": "audio"}],
      "target": {"modality": "bpe", "source": "text"}}, "names must be unique.*name"),
    ({"conditions": [{"modality": "audio_feat", "source": "audio", "mask_span": "x"}],
      "target": {"modality": "bpe", "source": "text"}}, "mask_span works on codec"),
])
def test_bad_audio_feat_templates_are_refused(bad, match):
    with pytest.raises(UnisonoError, match=match):
        parse_templates({"version": 1, "tasks": {"t": bad}})
