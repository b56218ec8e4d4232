import pytest
import torch

from unisono.errors import UnisonoError
from unisono.train.data import (
    TaskMixture,
    TokenBudgetBatcher,
    collate,
    condition_frames,
    crop_example,
    rank_split,
    split_by_task,
)
from unisono.train.toydata import PAD, toy_examples


def test_mixture_follows_weights_and_restarts():
    ex = toy_examples(10, 2, 8)
    mix = TaskMixture(split_by_task(ex), {"copy": 3.0, "count": 1.0}, seed=0)
    tasks = [next(mix)["task"] for _ in range(2000)]
    frac = tasks.count("copy") / len(tasks)
    assert 0.70 < frac < 0.80
    assert mix.epoch["copy"] > 0  # 5 copy examples, read many times over
    with pytest.raises(UnisonoError, match="no data"):
        TaskMixture(split_by_task(ex), {"asr": 1.0})


def test_batcher_budget_and_exact_state_round_trip():
    ex = toy_examples(30, 2, 8, min_len=1, max_len=12)
    mk = lambda: TokenBudgetBatcher(TaskMixture(split_by_task(ex), seed=1), max_frames=40, pool_size=7, seed=2)
    b = mk()
    seen = []
    for i in range(25):
        batch = next(b)
        longest = max(e["frames"].shape[0] for e in batch)
        assert len(batch) * longest <= 40 or len(batch) == 1
        seen.append([e["id"] for e in batch])
        if i == 10:
            state = b.state_dict()
    b2 = mk()
    b2.load_state_dict(state)
    rest = [[e["id"] for e in next(b2)] for _ in range(14)]
    assert rest == seen[11:]
    # length bucketing: within one pool, batches are sorted runs of lengths
    assert len({len(s) for s in seen}) > 1


def test_collate_pads_and_drops_conditions():
    ex = toy_examples(4, 3, 8)
    g = torch.Generator().manual_seed(0)
    mb = collate(ex, PAD, cond_dropout=1.0, generator=g)
    assert mb["frames"].shape[0] == 4 and mb["frames"].shape[2] == 3
    for i, e in enumerate(ex):
        n = e["frames"].shape[0]
        cond = e["cond_mask"]
        assert (mb["frames"][i, :n][cond] == PAD).all()
        assert torch.equal(mb["frames"][i, :n][~cond], e["frames"][~cond])
        assert (mb["frames"][i, n:] == PAD).all() and not mb["loss_mask"][i, n:].any()
    keep = collate(ex, PAD, cond_dropout=0.0)
    assert torch.equal(keep["frames"][0, : ex[0]["frames"].shape[0]], ex[0]["frames"])
    # without cond_mask, everything before the first loss frame is the condition (the task frame too)
    e = dict(ex[0])
    del e["cond_mask"]
    c = condition_frames(e)
    first = int(e["loss_mask"].any(-1).nonzero()[0])
    assert c[:first].all() and not c[first:].any()


def test_rank_split_partitions():
    src = lambda: iter(range(10))
    parts = [list(rank_split(src, r, 3)()) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(10)) and parts[1] == [1, 4, 7]


def test_collate_spreads_audio_feat_vectors_over_their_frames_and_crops_keep_the_last():
    fid = 5
    frames = torch.tensor([[2, 0], [fid, 0], [fid, 0], [fid, 0], [9, 9], [10, 10]])
    vec = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    ex = {"id": "a", "task": "t", "frames": frames, "loss_mask": torch.zeros(6, 2, dtype=torch.bool),
          "cond_mask": torch.tensor([0, 1, 1, 1, 0, 0], dtype=torch.bool), "audio_feat": vec}
    other = {"id": "b", "task": "t", "frames": frames[[0, 4]].clone(), "loss_mask": torch.zeros(2, 2, dtype=torch.bool)}
    mb = collate([other, ex], PAD, feature_id=fid)
    assert mb["feats"].shape == (2, 6, 4) and not mb["feats"][0].any()
    assert torch.equal(mb["feats"][1, 1:4], vec) and not mb["feats"][1, [0, 4, 5]].any()
    cropped = crop_example(ex, 4)  # the first two frames go: one placeholder with them
    assert torch.equal(collate([cropped], PAD, feature_id=fid)["feats"][0, :2], vec[1:])
    assert collate([other], PAD, feature_id=fid)["feats"] is None
