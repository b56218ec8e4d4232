import numpy as np
import pytest
import soundfile as sf
import torch

from unisono.cli import main
from unisono.codec import Codec, CodecConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def codec_dir(tmp_path):
    torch.manual_seed(0)
    c = Codec(CodecConfig(encoder_channels=4, latent_dim=16, decoder_dim=32, decoder_blocks=1, num_codebooks=4,
                          codebook_size=32, kmeans_iters=2))
    c.train()
    c(0.1 * torch.randn(2, 1, 3200))
    c.eval().save_pretrained(tmp_path / "codec")
    return tmp_path / "codec"


def test_encode_decode_eval_cli(codec_dir, tmp_path, capsys):
    t = np.arange(22050 * 1) / 22050
    sf.write(tmp_path / "in.wav", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)  # resampled to 16 kHz
    assert main(["codec", "encode", str(tmp_path / "in.wav"), "--codec", str(codec_dir), "-o", str(tmp_path / "c.npy"),
                 "--num-codebooks", "2"]) == 0
    codes = np.load(tmp_path / "c.npy")
    assert codes.shape == (2, 50) and codes.dtype == np.int64
    assert (
        main(["codec", "decode", str(tmp_path / "c.npy"), "--codec", str(codec_dir), "-o", str(tmp_path / "o.wav")])
        == 0
    )
    y, sr = sf.read(tmp_path / "o.wav")
    assert sr == 16000 and y.shape == (16000,)
    assert main(["codec", "eval", "--codec", str(codec_dir), "--data", str(tmp_path / "in.wav"),
                 "--num-codebooks", "1", "4", "--json", str(tmp_path / "ev.json")]) == 0
    import json

    rows = json.loads((tmp_path / "ev.json").read_text())["rows"]
    assert [r["num_codebooks"] for r in rows] == [1, 4] and all(np.isfinite(r["mel_distance"]) for r in rows)
    assert "| num_codebooks |" in capsys.readouterr().out


def test_cli_errors_are_one_line(codec_dir, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((4, 3), dtype=np.float32))
    assert (
        main(["codec", "decode", str(tmp_path / "bad.npy"), "--codec", str(codec_dir), "-o", str(tmp_path / "o.wav")])
        == 2
    )
    np.save(tmp_path / "big.npy", np.full((4, 3), 99, dtype=np.int64))
    assert (
        main(["codec", "decode", str(tmp_path / "big.npy"), "--codec", str(codec_dir), "-o", str(tmp_path / "o.wav")])
        == 2
    )
    assert (
        main(
            ["codec", "encode", str(tmp_path / "missing.wav"), "--codec", str(codec_dir), "-o", str(tmp_path / "x.npy")]
        )
        == 2
    )
    assert main(["codec", "train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("unisono codec: error:") == 4
    assert not (tmp_path / "o.wav").exists() and not (tmp_path / "x.npy").exists()
