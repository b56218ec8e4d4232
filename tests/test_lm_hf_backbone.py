"""A decoder LLM from a local directory (transformers AutoModelForCausalLM) as the global transformer."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from unisono.errors import UnisonoError  # noqa: E402
from unisono.lm import LMConfig, UnisonoLM  # noqa: E402

V, K = 40, 3
POSITIONS = 128  # the tiny LLMs' max_position_embeddings: a model config's max_seq_len may not exceed it


def _save_tiny_llm(path, kind):
    if kind == "llama":
        cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=POSITIONS)
    else:
        cfg = transformers.Qwen2Config(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=POSITIONS)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("kind,pattern", [("llama", "delay"), ("qwen2", "multiscale")])
def test_hf_backbone_cached_logits_and_round_trip(kind, pattern, tmp_path):
    d = _save_tiny_llm(tmp_path / "llm", kind)
    cfg = LMConfig(vocab_size=V, num_streams=K, pad_id=0, pattern=pattern, backbone_dir=str(d), local_layers=1,
                   local_d_model=16, local_heads=2, max_seq_len=POSITIONS)
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
    m = UnisonoLM.from_config(LMConfig(vocab_size=V, num_streams=K, pad_id=0, pattern="delay", backbone_dir=str(d),
                                       max_seq_len=POSITIONS))
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


def test_an_encoder_backbone_is_refused(tmp_path):
    """BERT as the backbone: every position sees the later ones (and it has 512 positions): refused at
    construction with one line, not a crash a few steps into training."""
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                  num_attention_heads=4, max_position_embeddings=512)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "bert")
    with pytest.raises(UnisonoError, match="backbone bert is not causal") as e:
        UnisonoLM.from_config(LMConfig(vocab_size=V, num_streams=K, pad_id=0, backbone_dir=str(tmp_path / "bert"),
                                       max_seq_len=512))
    assert "\n" not in str(e.value)


def test_a_backbone_with_fewer_positions_than_max_seq_len_is_refused(tmp_path):
    """GPT-2 learns 64 position embeddings: max_seq_len 4096 would index past them once a sequence is long."""
    gpt2 = {"model_type": "gpt2", "vocab_size": 100, "n_embd": 32, "n_layer": 1, "n_head": 4, "n_positions": 64}
    with pytest.raises(UnisonoError, match="has 64 positions .* max_seq_len 4096; set max_seq_len <= 64"):
        UnisonoLM.from_config(LMConfig(vocab_size=V, num_streams=K, pad_id=0, backbone_config=gpt2))
    m = UnisonoLM.from_config(LMConfig(vocab_size=V, num_streams=K, pad_id=0, backbone_config=gpt2, max_seq_len=64))
    assert m.backbone.is_causal()
    frames = torch.randint(1, V, (1, m.max_frames(), K))  # the longest sequence the model takes
    assert m(frames).shape == (1, m.max_frames(), K, V)
