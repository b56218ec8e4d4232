"""Attribute classifiers: fit on reference audio, predict, save/load as safetensors + json."""

import json

import numpy as np
import pytest
from eval_audio import SR, add_noise, clicks, tone

from unisono.errors import UnisonoError
from unisono.eval.metrics import Reference, score
from unisono.eval.metrics.classifier import AttributeClassifier, register_classifier
from unisono.eval.metrics.frechet import mel_stats_embedding


def _examples(seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(6):
        out.append((tone(200 + 40 * rng.random()), "hum"))
        out.append((add_noise(np.zeros(SR, np.float32) + 1e-3, -20, seed=seed * 10 + i), "hiss"))
        out.append((clicks(90 + 60 * rng.random(), 1.0), "tick"))
    return out


def test_fit_predict_save_load(tmp_path):
    train, test = _examples(0), _examples(1)
    feats = np.stack([mel_stats_embedding(w, SR) for w, _ in train])
    clf = AttributeClassifier.fit(feats, [y for _, y in train], info={"trained_on": "synthetic"})
    assert clf.classes == ["hiss", "hum", "tick"] and clf.info["train_accuracy"] == 1.0
    preds = [clf.predict(w, SR) for w, _ in test]
    assert preds == [y for _, y in test]
    clf.save(tmp_path, "sound")
    meta = json.loads((tmp_path / "sound.json").read_text())
    assert meta["classes"] == clf.classes and meta["trained_on"] == "synthetic"
    again = AttributeClassifier.load(tmp_path, "sound")
    assert [again.predict(w, SR) for w, _ in test] == preds
    assert again.info["n_train"] == len(train)
    with pytest.raises(UnisonoError, match="no classifier"):
        AttributeClassifier.load(tmp_path, "missing")
    with pytest.raises(UnisonoError, match="two classes"):
        AttributeClassifier.fit(feats[:2], ["hum", "hum"])
    # the metric: right label 1, wrong label 0, unseen class not scored
    register_classifier("event", again)
    wav = tone(220)
    assert score("event", wav, Reference("a", attributes={"event": "hum"}))["event_acc"] == 1.0
    assert score("event", wav, Reference("b", attributes={"event": "tick"}))["event_acc"] == 0.0
    assert np.isnan(score("event", wav, Reference("c", attributes={"event": "gong"}))["event_acc"])
