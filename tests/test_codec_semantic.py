import pytest
import torch

transformers = pytest.importorskip("transformers")

from unisono.codec import Codec, CodecConfig, load_codec  # noqa: E402
from unisono.errors import UnisonoError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.HubertConfig(hidden_size=12, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                                    conv_dim=[8] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    d = tmp_path_factory.mktemp("teacher")
    transformers.HubertModel(cfg).save_pretrained(str(d))
    return d


def tiny(teacher_dir, **kw):
    torch.manual_seed(0)
    return Codec(
        CodecConfig(
            encoder_channels=4,
            latent_dim=16,
            decoder_dim=32,
            decoder_blocks=1,
            num_codebooks=2,
            codebook_size=16,
            kmeans_iters=2,
            quantizer_dropout=0.0,
            semantic={"teacher": str(teacher_dir), "layer": -1},
            **kw,
        )
    )


def test_semantic_distillation_trains_and_round_trips(teacher_dir, tmp_path):
    c = tiny(teacher_dir)
    teacher_before = {k: v.clone() for k, v in c.semantic.teacher.state_dict().items()}
    wav = 0.1 * torch.randn(2, 1, 3200, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam([p for p in c.parameters() if p.requires_grad], lr=3e-3)
    c.train()
    losses = []
    for _ in range(12):
        out = c(wav)
        loss = out["semantic_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
    assert losses[-1] < 0.8 * losses[0]  # the head learns to reconstruct the teacher features after RVQ
    assert c.semantic.head.weight.grad is not None and c.semantic.fuse_proj.weight.grad is not None
    for k, v in c.semantic.teacher.state_dict().items():  # the teacher is frozen
        assert torch.equal(v, teacher_before[k])
    # the teacher features change the codes: same encoder, the fused latent differs from a plain one
    c.eval()
    codes = c.encode(wav)
    assert codes.shape == (2, 2, 10) and torch.equal(c.encode(wav), codes)
    c.save_pretrained(tmp_path / "sem")
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "sem" / "model.safetensors")).keys()
    assert not any(k.startswith("semantic.teacher.") for k in keys) and "semantic.head.weight" in keys
    d = load_codec(tmp_path / "sem")
    assert torch.equal(d.encode(wav), codes)
    assert torch.allclose(d.decode(codes), c.decode(codes))
    with pytest.raises(UnisonoError, match="streaming"):
        with c.streaming():
            pass


def test_missing_teacher(tmp_path):
    with pytest.raises(UnisonoError, match="teacher"):
        Codec(CodecConfig(semantic={"teacher": str(tmp_path / "nope")}))
