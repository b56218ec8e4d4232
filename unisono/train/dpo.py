"""Direct preference optimisation (DPO) for the unisono language model.

Given pairs of examples with the same prompt, a preferred ("chosen") and a dispreferred ("rejected")
target, DPO raises the policy's log-likelihood margin between them relative to a frozen reference model:

    loss = -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r))))

plus, optionally, ``ce_weight`` times the ordinary cross-entropy of the chosen targets (a regulariser that
keeps the policy a good generator). Examples are the trainer's dicts (``frames [T, K]``, ``loss_mask
[T, K]``); the log-likelihood of an example is the sum over its loss tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unisono.errors import UnisonoError
from unisono.train.data import collate, model_inputs


def sequence_logprobs(model, frames: torch.Tensor, loss_mask: torch.Tensor,
                      stream_weights: list[float] | None = None, feats: torch.Tensor | None = None) -> torch.Tensor:
    """``[B]`` summed log-probabilities of the tokens under ``loss_mask [B, T, K]`` (differentiable): minus the
    model's :meth:`~unisono.lm.UnisonoLM.token_cross_entropy`, stream k weighted by ``stream_weights[k]``;
    ``feats [B, T, D]``: the audio features of the placeholder frames (a model with ``feature_dim`` > 0)."""
    ce = model.token_cross_entropy(frames, loss_mask, feats)  # [B, T, K], 0 off the mask
    loss_mask = loss_mask.bool()
    out = ce.new_zeros(frames.shape[0])
    for k in range(frames.shape[-1]):
        sel = loss_mask[..., k]  # [B, T]
        if not bool(sel.any()):
            continue
        w = 1.0 if stream_weights is None else float(stream_weights[k])
        out = out.index_add(0, sel.nonzero()[:, 0], w * -ce[..., k][sel])
    return out


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> dict[str, torch.Tensor]:
    """DPO loss over ``[B]`` sequence log-probabilities; also the implicit reward margin and accuracy."""
    if beta <= 0:
        raise UnisonoError(f"beta must be positive, got {beta}")
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return {"loss": -F.logsigmoid(margin).mean(), "margin": margin.detach().mean(),
            "accuracy": (margin.detach() > 0).float().mean()}


def dpo_objective(policy, reference, chosen: list[dict], rejected: list[dict], beta: float = 0.1,
                  ce_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """The DPO loss of ``policy`` against the frozen ``reference`` on paired examples, plus ``ce_weight`` x the
    mean token cross-entropy of the chosen examples under the policy."""
    if len(chosen) != len(rejected) or not chosen:
        raise UnisonoError("DPO needs as many rejected examples as chosen ones (at least one pair)")
    pad, fid = policy.cfg.pad_id, policy.cfg.feature_id
    dev = next(policy.parameters()).device
    c = model_inputs(collate(chosen, pad, feature_id=fid), dev)
    r = model_inputs(collate(rejected, pad, feature_id=fid), dev)
    cf, cm = c["frames"], c["loss_mask"]
    pc = sequence_logprobs(policy, cf, cm, feats=c.get("feats"))
    pr = sequence_logprobs(policy, r["frames"], r["loss_mask"], feats=r.get("feats"))
    with torch.no_grad():
        rc = sequence_logprobs(reference, cf, cm, feats=c.get("feats"))
        rr = sequence_logprobs(reference, r["frames"], r["loss_mask"], feats=r.get("feats"))
    out = dpo_loss(pc, pr, rc, rr, beta)
    if ce_weight > 0:
        ce = -pc.sum() / cm.any(-1).sum().clamp_min(1) / cf.shape[-1]
        out["ce"] = ce.detach()
        out["loss"] = out["loss"] + ce_weight * ce
    return out
