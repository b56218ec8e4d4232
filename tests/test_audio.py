import numpy as np
import pytest
import soundfile as sf
import torch

from unisono import audio
from unisono.errors import UnisonoError


def sine(freq=440.0, sr=16000, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_save_load_round_trip(tmp_path, ext):
    x = sine()
    path = audio.save(tmp_path / f"a{ext}", x, 16000)
    wav, sr = audio.load(path)
    assert sr == 16000
    assert wav.shape == (1, 16000) and wav.dtype == torch.float32
    assert np.max(np.abs(wav[0].numpy() - x)) < 1e-4  # 16-bit quantisation only
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file may be left behind"


def test_load_resamples_and_downmixes(tmp_path):
    stereo = np.stack([sine(440, 22050), sine(440, 22050) * 0.5])
    sf.write(tmp_path / "s.wav", stereo.T, 22050)
    wav, sr = audio.load(tmp_path / "s.wav", sample_rate=16000)
    assert sr == 16000 and wav.shape[0] == 1
    assert abs(wav.shape[1] - 16000) <= 2
    # the downmix of (1, 0.5) x sine has amplitude 0.375
    assert abs(float(wav[0, 2000:-2000].abs().max()) - 0.375) < 0.01


def test_resample_keeps_frequency():
    y = audio.resample(sine(1000, 48000), 48000, 16000)
    spectrum = np.abs(np.fft.rfft(y))
    peak_hz = np.argmax(spectrum) * 16000 / len(y)
    assert abs(peak_hz - 1000) < 2
    assert isinstance(audio.resample(torch.from_numpy(sine()), 16000, 8000), torch.Tensor)


def test_missing_and_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(UnisonoError, match="does not exist"):
        audio.load(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00not really audio")
    with pytest.raises(UnisonoError, match="cannot read"):
        audio.load(bad)
    with pytest.raises(UnisonoError, match="NaN"):
        audio.save(tmp_path / "nan.wav", np.array([0.0, np.nan], dtype=np.float32), 16000)
    assert not (tmp_path / "nan.wav").exists()
    with pytest.raises(UnisonoError, match="use one of"):
        audio.save(tmp_path / "x.mp3", sine(), 16000)


def test_loudness_normalisation():
    y = audio.normalize_loudness(sine(amp=0.01), target_dbfs=-20.0)
    assert abs(audio.rms_dbfs(y) - (-20.0)) < 0.01
    loud = audio.normalize_loudness(sine(amp=0.5), target_dbfs=0.0, peak=0.9)
    assert np.max(np.abs(loud)) <= 0.9 + 1e-6
    silence = np.zeros(100, dtype=np.float32)
    assert audio.rms_dbfs(silence) == float("-inf")
    assert np.array_equal(audio.normalize_loudness(silence), silence)


def test_mel_spectrogram_peaks_at_tone():
    sr = 16000
    mel = audio.mel_spectrogram(torch.from_numpy(sine(1000, sr)), sr, n_fft=1024, hop_length=256, n_mels=80)
    assert mel.shape == (80, 16000 // 256 + 1)
    centres = audio.mel_to_hz(np.linspace(audio.hz_to_mel(0), audio.hz_to_mel(sr / 2), 82)[1:-1])
    peak_band = int(mel[:, 10:-10].mean(dim=1).argmax())
    assert abs(centres[peak_band] - 1000) < 120
    batch = audio.mel_spectrogram(torch.zeros(2, 1, 4000, requires_grad=True), sr)
    assert batch.shape[:3] == (2, 1, 80)
    assert isinstance(audio.mel_spectrogram(np.zeros(4000, dtype=np.float32), sr), np.ndarray)


def test_filterbank_rows_cover_band():
    fb = audio.mel_filterbank(16000, 512, 40)
    assert fb.shape == (40, 257)
    assert torch.all(fb.sum(dim=1) > 0)
