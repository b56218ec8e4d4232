"""Continuous audio features in the LM (audio_feat conditions): the adapter path cached and uncached, batching,
condition dropout and guidance, checkpoints and their encoder, and a training run that learns to read them."""

import json

import pytest
import torch

from unisono.codec import Codec, CodecConfig
from unisono.encode import SegmentEncoder
from unisono.errors import UnisonoError
from unisono.features import build_encoder
from unisono.inference import TaskIO
from unisono.lm import PATTERNS, LMConfig, UnisonoLM
from unisono.lm.sampling import cfg_mix
from unisono.options import GenerationOptions
from unisono.tasks import Segment, build_example, parse_templates
from unisono.train.data import collate, model_inputs, split_by_task
from unisono.train.dpo import sequence_logprobs
from unisono.train.launch import model_dims_from_vocab
from unisono.train.trainer import Trainer
from unisono.vocab import Vocab

pytestmark = pytest.mark.usefixtures("one_thread")

V, K, PAD, D = 40, 3, 0, 6
FID, FSTART, FEND, TASK = 5, 6, 7, 8  # the placeholder, its segment's start/end tokens, a task token
LO = 9  # content ids: LO .. V - 1
FEAT_TEMPLATE = {"version": 1, "tasks": {"asr_feat": {
    "conditions": [{"name": "speech", "modality": "codec", "source": "audio"},
                   {"name": "speech_feat", "modality": "audio_feat", "source": "audio"}],
    "target": {"modality": "bpe", "source": "text"}}}}


def cfg(pattern, **kw):
    return LMConfig(vocab_size=V, num_streams=K, pad_id=PAD, pattern=pattern, d_model=32, n_layers=2, n_heads=4,
                    local_layers=1, local_d_model=16, local_heads=2, max_seq_len=256,
                    **{"feature_dim": D, "feature_id": FID, **kw})


def model(pattern, **kw):
    torch.manual_seed(0)
    m = UnisonoLM.from_config(cfg(pattern, **kw)).eval()
    g = torch.Generator().manual_seed(1)
    for p in m.parameters():  # weights large enough that features change the logits clearly
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m


def example(n_feat: int, n_tgt: int, seed: int, eid: str = "x") -> dict:
    """``<task> <fstart> <feat> x n_feat <fend> target x n_tgt`` with vectors ``[n_feat, D]`` (fill pad)."""
    g = torch.Generator().manual_seed(seed)

    def tok(i):
        return torch.tensor([[i] + [PAD] * (K - 1)])

    cond = torch.cat([tok(FSTART)] + [tok(FID)] * n_feat + [tok(FEND)])
    frames = torch.cat([tok(TASK), cond, torch.randint(LO, V, (n_tgt, K), generator=g)])
    loss = torch.zeros(frames.shape, dtype=torch.bool)
    loss[1 + len(cond):] = True
    cond_mask = torch.zeros(len(frames), dtype=torch.bool)
    cond_mask[1:1 + len(cond)] = True
    return {"id": eid, "task": "t", "frames": frames, "loss_mask": loss, "cond_mask": cond_mask,
            "audio_feat": torch.randn(n_feat, D, generator=g)}


@pytest.mark.parametrize("pattern", PATTERNS)
def test_cached_decoding_with_features_equals_the_forward_pass(pattern):
    m = model(pattern)
    exs = [example(4, 0, seed=2), example(4, 0, seed=3)]
    mb = collate(exs, PAD, feature_id=FID)
    prompt, feats = mb["frames"], mb["feats"]  # [2, 7, K], [2, 7, D]
    assert feats.shape == (2, 7, D) and torch.equal(feats[0, 2:6], exs[0]["audio_feat"])
    seen = {}

    def pick(h, k, t):  # greedy, recording each step's logits
        seen[(t, k)] = m.head(h, k)
        return seen[(t, k)].argmax(-1)

    n_new = 5
    with torch.inference_mode():
        new = m.decode(prompt, n_new, pick, end_id=None, feats=feats)
        full = torch.cat([prompt, new], 1)
        full_feats = torch.cat([feats, torch.zeros(2, n_new, D)], 1)
        ref = m(full, full_feats)
        other = m(full, full_feats.flip(0))  # the rows' features swapped
    assert len(seen) == n_new * K
    for (t, k), logits in seen.items():
        torch.testing.assert_close(logits, ref[:, t, k], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(other[:, 7:], ref[:, 7:], atol=1e-3)  # the features reach the predictions
    torch.testing.assert_close(other[:, :3, 0], ref[:, :3, 0])  # ... only after the first placeholder frame
    # generate() is the same cached path: greedy tokens equal the argmax of the forward pass
    out = m.generate(prompt, n_new, temperature=0.0, feats=feats)
    assert torch.equal(out, new)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_batch_of_mixed_feature_conditions_equals_each_row_alone(pattern):
    m = model(pattern)
    exs = [example(2, 5, seed=4, eid="a"), example(6, 2, seed=5, eid="b"), example(0, 7, seed=6, eid="c")]
    exs[2].pop("audio_feat")  # an example without features in a batch with features
    mb = collate(exs, PAD, feature_id=FID)
    with torch.no_grad():
        batch = m(mb["frames"], mb["feats"])
        ce = m.token_cross_entropy(**model_inputs(mb, "cpu"))
        for i, ex in enumerate(exs):
            one = collate([ex], PAD, feature_id=FID)
            n = ex["frames"].shape[0]
            torch.testing.assert_close(batch[i, :n], m(one["frames"], one["feats"])[0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(ce[i, :n], m.token_cross_entropy(**model_inputs(one, "cpu"))[0],
                                       atol=1e-4, rtol=1e-4)
    # generation: two prompts of one length, different features, one seed per row
    p = [example(3, 0, seed=7), example(3, 0, seed=8)]
    pm = collate(p, PAD, feature_id=FID)
    both = m.generate(pm["frames"], 6, top_k=8, seed=[1, 2], feats=pm["feats"])
    for i in range(2):
        alone = m.generate(pm["frames"][i:i + 1], 6, top_k=8, seed=[i + 1], feats=pm["feats"][i:i + 1])
        assert torch.equal(alone[0], both[i])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_condition_dropout_removes_the_features(pattern):
    m = model(pattern)
    ex = example(4, 5, seed=9)
    dropped = collate([ex], PAD, cond_dropout=1.0, generator=torch.Generator().manual_seed(0), feature_id=FID)
    assert bool(dropped["cond_dropped"][0]) and not bool(dropped["feats"].any())
    by_hand = ex["frames"].clone()
    by_hand[ex["cond_mask"]] = PAD  # the condition replaced by pad: no placeholder, no features
    assert torch.equal(dropped["frames"][0], by_hand)
    kept = collate([ex], PAD, feature_id=FID)
    with torch.no_grad():
        a = m.loss(**model_inputs(dropped, "cpu"))["loss"]
        b = m.loss(by_hand[None], ex["loss_mask"][None])["loss"]
        c = m.loss(by_hand[None], ex["loss_mask"][None], feats=kept["feats"])["loss"]  # features without placeholders
        full = m.loss(**model_inputs(kept, "cpu"))["loss"]
        lp = sequence_logprobs(m, **model_inputs(kept, "cpu"))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c, b)
    assert abs(float(full - b)) > 1e-3
    torch.testing.assert_close(-lp.sum() / int(ex["loss_mask"].sum()), full)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_guidance_rows_without_the_condition_get_no_features(pattern):
    m = model(pattern)
    pm = collate([example(3, 0, seed=10), example(3, 0, seed=11)], PAD, feature_id=FID)
    prompt, feats = pm["frames"], pm["feats"]
    out = m.generate(prompt, 2, temperature=0.0, cfg_scale=2.5, feats=feats)
    nxt = torch.zeros(2, 1, K, dtype=torch.long)
    with torch.no_grad():
        lc = m(torch.cat([prompt, nxt], 1), torch.cat([feats, torch.zeros(2, 1, D)], 1))[:, -1, 0]
        lu = m(torch.full((2, prompt.shape[1] + 1, K), PAD))[:, -1, 0]  # no placeholder, no feats
    assert torch.equal(out[:, 0, 0], cfg_mix(lc, lu, 2.5).argmax(-1))


def test_feature_inputs_are_checked():
    m = model("delay")
    pm = collate([example(2, 3, seed=12)], PAD, feature_id=FID)
    with pytest.raises(UnisonoError, match="placeholders .* but no feats"):
        m(pm["frames"])
    with pytest.raises(UnisonoError, match=r"feats must be \[B, T, D\]"):
        m(pm["frames"], pm["feats"][:, :-1])
    plain = UnisonoLM.from_config(LMConfig(vocab_size=V, num_streams=K, pad_id=PAD, d_model=32, n_heads=4))
    with pytest.raises(UnisonoError, match="reads no audio features"):
        plain(pm["frames"], pm["feats"])
    with pytest.raises(UnisonoError, match="has audio_feat vectors but the model reads no audio features"):
        collate([example(2, 3, seed=12)], PAD)
    bad = example(2, 3, seed=12)
    bad["audio_feat"] = bad["audio_feat"][:1]
    with pytest.raises(UnisonoError, match="2 audio_feat frames but 1 vectors"):
        collate([bad], PAD, feature_id=FID)
    for kw, match in ((dict(feature_id=None), "needs feature_id"), (dict(feature_id=PAD), "not pad_id"),
                      (dict(feature_dim=0), "need feature_dim > 0"),
                      (dict(feature_encoder={"dim": 3, "fingerprint": "x"}), "encoder of dim 6")):
        with pytest.raises(UnisonoError, match=match):
            cfg("delay", **kw)


def test_a_model_without_features_keeps_its_config_json(tmp_path):
    plain = UnisonoLM.from_config(LMConfig(vocab_size=V, num_streams=K, pad_id=PAD, d_model=32, n_heads=4))
    plain.save_pretrained(tmp_path / "plain")
    d = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert not any(key.startswith("feature") for key in d)
    assert not any(name.startswith("feature_adapter") for name, _ in plain.named_parameters())


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_feature_model_loads_back_and_names_its_encoder(pattern, tmp_path):
    enc = build_encoder("logmel", n_mels=D)
    m = model(pattern, feature_encoder=enc.describe())
    m.save_pretrained(tmp_path / "ck")
    d = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert d["feature_dim"] == D and d["feature_id"] == FID and d["feature_encoder"]["fingerprint"] == enc.fingerprint()
    back = UnisonoLM.from_pretrained(tmp_path / "ck", feature_encoder=build_encoder("logmel", n_mels=D))
    pm = collate([example(3, 4, seed=13)], PAD, feature_id=FID)
    with torch.no_grad():
        torch.testing.assert_close(back(pm["frames"], pm["feats"]), m(pm["frames"], pm["feats"]))
    other = build_encoder("logmel", n_mels=D, sample_rate=24000)
    with pytest.raises(UnisonoError, match=r"^this model was trained on features of logmel-v1:\w+, not logmel-v1:\w+; "
                                           r"use the checkpoint's feature encoder \(or retrain\)$"):
        UnisonoLM.from_pretrained(tmp_path / "ck", feature_encoder=other)
    with pytest.raises(UnisonoError, match="trained on features of"):
        back.check_feature_encoder(other)
    with pytest.raises(UnisonoError, match="no feature encoder is stored"):
        model(pattern).check_feature_encoder(enc)


def _read_feats_examples(n: int, seed: int) -> list[dict]:
    """A task only the features can solve: 3-6 feature frames encode one class c of D (a one-hot plus noise); the
    target, one frame, holds code c in stream 0 (c + k mod D in stream k)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = int(torch.randint(3, 7, (1,), generator=g))
        ex = example(length, 1, seed=seed * 1000 + i, eid=f"r{i}")
        c = int(torch.randint(0, D, (1,), generator=g))
        ex["audio_feat"] = torch.nn.functional.one_hot(torch.full((length,), c), D).float() * 2 \
            + 0.1 * torch.randn(length, D, generator=g)
        ex["frames"][-1] = LO + (c + torch.arange(K)) % D
        out.append(ex)
    return out


def test_a_tiny_training_run_learns_to_read_the_features(tmp_path):
    train, val = _read_feats_examples(24, seed=1), _read_feats_examples(8, seed=2)
    mcfg = dict(vocab_size=V, num_streams=K, pad_id=PAD, pattern="delay", d_model=32, n_layers=2, n_heads=4,
                max_seq_len=64, feature_dim=D, feature_id=FID)
    tc = dict(max_steps=100, lr=3e-3, warmup_steps=5, max_frames=256, pool_size=8, save_every=0, log_every=1,
              tensorboard=False, weight_decay=0.0, cond_dropout=0.1, eval_every=100, eval_batches=4)
    tr = Trainer(mcfg, tc, tmp_path / "run", split_by_task(train), val_sources=split_by_task(val))
    last = tr.train(progress=False)
    rows = [json.loads(r) for r in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert last["loss"] < 0.6 * rows[0]["loss"]
    m = UnisonoLM.from_pretrained(tmp_path / "run" / "checkpoints" / "step_00000100")
    mb = collate(val, PAD, feature_id=FID)
    shuffled = dict(mb, feats=mb["feats"][:, :, torch.randperm(D, generator=torch.Generator().manual_seed(0))])
    with torch.no_grad():
        right = float(m.loss(**model_inputs(mb, "cpu"))["loss"])
        wrong = float(m.loss(**model_inputs(shuffled, "cpu"))["loss"])
    assert right < 0.6 * wrong  # it reads the features, not only the target's own frames
    assert abs(right - last["val_loss/t"]) < 1e-3  # validation (evaluate) collates the features too


def test_inference_encodes_features_on_the_fly_and_samples_with_them():
    """TaskIO (the seam of the pipeline, server and CLI): one audio input feeds a codec and an audio_feat
    condition of the same source; the prompt equals the training layout and feats hold the encoder's vectors."""
    torch.manual_seed(0)
    codec = Codec(CodecConfig(encoder_channels=4, latent_dim=16, decoder_dim=32, decoder_blocks=1, num_codebooks=2,
                              codebook_size=32, kmeans_iters=2)).eval()
    tpl = parse_templates(FEAT_TEMPLATE)["asr_feat"]
    vocab = Vocab.build(["asr_feat"], num_codebooks=2, codebook_size=32, bpe=20)
    enc = build_encoder("logmel_codec", codec)
    lm = UnisonoLM.from_config(LMConfig(vocab_size=vocab.size, num_streams=2, pad_id=vocab.pad_id, d_model=32,
                                        n_heads=4, n_layers=1, feature_dim=enc.dim,
                                        feature_id=vocab.placeholder_id("audio_feat"),
                                        feature_encoder=enc.describe())).eval()
    io = TaskIO(tpl, vocab, None, codec, lm)
    assert io.spec.inputs == {"speech": "audio"}
    wav = 0.1 * torch.randn(8000, generator=torch.Generator().manual_seed(3))
    prep = io.prepare({"audio": (wav.numpy(), 16000)}, GenerationOptions(max_duration=1.0))
    ref = SegmentEncoder(vocab, None, codec, enc)
    segs = [ref.codec_segment(tpl.conditions[0], ref.codes(wav[None])),
            ref.audio_feat_segment(tpl.conditions[1], wav[None]), Segment("bpe", ids=[])]
    ex = build_example(vocab, tpl, segs)
    n = prep.prompt.shape[0]
    assert torch.equal(prep.prompt, ex["frames"][:n]) and prep.feats.shape == (n, enc.dim)
    rows = (prep.prompt[:, 0] == vocab.placeholder_id("audio_feat")).nonzero().squeeze(-1)
    assert len(rows) == 25 and torch.allclose(prep.feats[rows], enc.encode(wav, 16000))
    assert not bool(prep.feats[prep.prompt[:, 0] != vocab.placeholder_id("audio_feat")].any())
    new = io.sample([prep, prep], GenerationOptions(top_k=5, seed=1, guidance_scale=2.0))
    assert new.shape[0] == 2 and torch.equal(new[0], new[1])
    with pytest.raises(UnisonoError, match="names no feature encoder"):
        TaskIO(tpl, vocab, None, codec, model("delay"))
    other = Codec(codec.config)  # another codec: another logmel_codec encoder
    with pytest.raises(UnisonoError, match="trained on features of"):
        TaskIO(tpl, vocab, None, other, lm)


def test_a_training_run_takes_the_placeholder_id_from_the_shards_vocabulary(tmp_path):
    Vocab.build(["asr"], num_codebooks=2, codebook_size=32).save(tmp_path / "vocab.json")
    assert "feature_id" not in model_dims_from_vocab(tmp_path / "vocab.json")
    assert model_dims_from_vocab(tmp_path / "vocab.json", feature_dim=80)["feature_id"] == 22
