"""DPO: the loss against a hand-computed value, sequence log-probs against a full forward, and a few steps
that raise the preference margin."""

import copy
import math

import pytest
import torch

from unisono.lm import UnisonoLM
from unisono.lm.config import LMConfig
from unisono.train.dpo import dpo_loss, dpo_objective, sequence_logprobs
from unisono.train.toydata import toy_examples, toy_vocab_size

pytestmark = pytest.mark.usefixtures("one_thread")
K, C = 2, 8


def test_dpo_loss_matches_a_hand_computed_value():
    out = dpo_loss(torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0]), torch.tensor([-11.0, -5.0]),
                   torch.tensor([-11.0, -5.0]), beta=0.5)
    # row 1: 0.5 * ((-10 + 11) - (-12 + 11)) = 1.0 ; row 2: 0.5 * ((0) - (1)) = -0.5
    expected = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(0.5)))) / 2
    assert abs(float(out["loss"]) - expected) < 1e-6
    assert abs(float(out["margin"]) - 0.25) < 1e-6 and float(out["accuracy"]) == 0.5


def tiny(pattern):
    torch.manual_seed(0)
    return UnisonoLM.from_config(LMConfig(vocab_size=toy_vocab_size(K, C), num_streams=K, pad_id=0, pattern=pattern,
                                          d_model=32, n_layers=1, n_heads=2, local_layers=1, local_d_model=16,
                                          local_heads=2, max_seq_len=128))


@pytest.mark.parametrize("pattern", ["delay", "multiscale", "flat"])
def test_sequence_logprobs_equal_the_full_forward(pattern):
    model = tiny(pattern).eval()
    ex = toy_examples(3, K, C, seed=1)
    t = max(e["frames"].shape[0] for e in ex)
    frames = torch.zeros((3, t, K), dtype=torch.long)
    mask = torch.zeros((3, t, K), dtype=torch.bool)
    for i, e in enumerate(ex):
        frames[i, : e["frames"].shape[0]] = e["frames"]
        mask[i, : e["frames"].shape[0]] = e["loss_mask"]
    with torch.no_grad():
        got = sequence_logprobs(model, frames, mask)
        lp = torch.log_softmax(model(frames).float(), dim=-1)  # [B, T, K, V]
        want = (lp.gather(-1, frames[..., None])[..., 0] * mask).sum(dim=(1, 2))
    assert torch.allclose(got, want, atol=1e-4)


def test_a_few_dpo_steps_raise_the_preference_margin():
    policy = tiny("delay")
    reference = copy.deepcopy(policy).eval()
    chosen = toy_examples(4, K, C, seed=2)
    rejected = []
    for e in chosen:  # same prompt, a wrong target: every target code shifted by one
        r = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in e.items()}
        body = r["loss_mask"].all(-1)
        r["frames"][body] = (r["frames"][body] % 8) + 1
        rejected.append(r)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    first = dpo_objective(policy, reference, chosen, rejected, beta=0.5, ce_weight=0.1)
    for _ in range(15):
        out = dpo_objective(policy, reference, chosen, rejected, beta=0.5, ce_weight=0.1)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    last = dpo_objective(policy, reference, chosen, rejected, beta=0.5, ce_weight=0.1)
    assert float(first["margin"]) == pytest.approx(0.0, abs=1e-5)  # policy == reference at the start
    assert float(last["margin"]) > 0.5 and float(last["accuracy"]) == 1.0
    assert last["loss"].item() < first["loss"].item()
