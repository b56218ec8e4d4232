"""A decoder LLM from a local directory (transformers AutoModelForCausalLM) as the global transformer."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from unisono.errors import UnisonoError  # noqa: E402
from unisono.lm import LMConfig, UnisonoLM  # noqa: E402

V, K = 40, 3


def _save_tiny_llm(path, kind):
    if kind == "llama":
        cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    else:
        cfg = transformers.Qwen2Config(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind,pattern", [("llama", "delay"), ("qwen2", "multiscale")])
def test_hf_backbone_cached_logits_and_round_trip(kind, pattern, tmp_path):
    d = _save_tiny_llm(tmp_path / "llm", kind)
    cfg = LMConfig(vocab_size=V, num_streams=K, pad_id=0, pattern=pattern, backbone_dir=str(d), local_layers=1,
                   local_d_model=16, local_heads=2)
    m = UnisonoLM.from_config(cfg).eval()
    assert m.dim == 32 and m.cfg.backbone_config["model_type"] == kind
    frames = torch.randint(1, V, (2, 6, K))
    full = m(frames)
    assert full.shape == (2, 6, K, V)
    seen = {}

    def pick(feats, k, t):
        seen[(t, k)] = m.head(feats, k)
        return frames[:, t, k]

    with torch.no_grad():
        m.decode(frames[:, :2], 4, pick, end_id=None)
    for (t, k), lg in seen.items():
        torch.testing.assert_close(lg, full[:, t, k], atol=1e-4, rtol=1e-4)
    # the checkpoint carries the backbone's config and weights: no need for the original directory
    m.save_pretrained(tmp_path / "ckpt")
    m2 = UnisonoLM.from_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(m2(frames), full, atol=1e-5, rtol=1e-5)
    out = m2.generate(frames[:, :2], 3, seed=0, top_k=5)
    assert out.shape == (2, 3, K)
    # gradients reach the LLM's layers
    m.train()
    m.loss(frames, torch.ones_like(frames, dtype=torch.bool))["loss"].backward()
    assert m.backbone.body.layers[0].self_attn.q_proj.weight.grad is not None


def test_hf_backbone_missing_dir(tmp_path):
    with pytest.raises(UnisonoError, match="config.json"):
        UnisonoLM.from_config(LMConfig(vocab_size=V, num_streams=K, pad_id=0, backbone_dir=str(tmp_path)))


@pytest.mark.parametrize("bits", [8, 4])
def test_hf_backbone_quantized_keeps_its_predictions(tmp_path, bits):
    from unisono.lm.quant import quantize_inference

    d = _save_tiny_llm(tmp_path / "llm", "qwen2")  # Qwen2's q/k/v projections have biases: kept in float
    m = UnisonoLM.from_config(LMConfig(vocab_size=V, num_streams=K, pad_id=0, pattern="delay", backbone_dir=str(d)))
    m.eval()
    frames = torch.randint(1, V, (1, 5, K), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(frames).softmax(-1)
        quantize_inference(m, bits)
        got = m(frames).softmax(-1)
    kinds = {type(x).__name__ for x in m.backbone.modules()}
    assert f"Int{bits}Linear" in kinds and "Linear" in kinds  # the biased projections stay nn.Linear
    assert 0 < float((ref - got).abs().max()) < (0.02 if bits == 8 else 0.1)
    out = m.generate(frames[:, :2], 3, top_k=5, seed=0)
    assert out.shape == (1, 3, K)
