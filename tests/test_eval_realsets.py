"""Evaluation sets of real recordings (unisono.eval.realsets): made from installed files, never copied."""

import json

import numpy as np
import pytest
import soundfile as sf

from unisono.cli import main
from unisono.errors import UnisonoError
from unisono.eval import realsets
from unisono.eval.corpus import load_corpus_cuts


def _stamp(root, rel, text, desc=True, effect=True, seconds=0.4, rate=22050):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
    path.with_suffix(".txt").write_text(f"{text}\nfr.utf8=Une traduction.\n")
    if effect:
        sf.write(path.with_suffix(".ogg"), tone, rate)
    if desc:
        sf.write(path.with_name(path.name + "_desc.ogg"), tone, rate)
        sf.write(path.with_name(path.name + "_desc_fr.ogg"), tone, rate)  # other languages: not English speech


@pytest.fixture
def stamps(tmp_path, monkeypatch):
    root = tmp_path / "stamps"
    _stamp(root, "animals/birds/owl", "An owl.")
    _stamp(root, "animals/mammals/wild_boar", "Two wild boars.", effect=False)
    _stamp(root, "household/bell", "A bicycle bell.", desc=False)
    _stamp(root, "symbols/math/2", "Two.", desc=False)  # a spoken digit: not an effect
    _stamp(root, "symbols/alphabets/german/filled/lowercase/a", "A.", desc=False)
    (root / "town").mkdir()
    sf.write(root / "town" / "no_text.ogg", np.zeros(800, np.float32), 8000)  # no description: left out
    monkeypatch.setattr(realsets, "TUXPAINT_STAMPS", root)
    return root


def test_tuxpaint_set_speech_and_effects_with_their_texts(stamps, tmp_path):
    cuts = realsets.tuxpaint_cuts()
    speech = {c["id"]: c for c in cuts if c["custom"]["kind"] == "speech"}
    sounds = {c["id"]: c for c in cuts if c["custom"]["kind"] == "sound"}
    assert sorted(speech) == ["tuxpaint-speech-animals-birds-owl_desc",
                              "tuxpaint-speech-animals-mammals-wild_boar_desc"]
    # said without the description's article; other text kept
    assert [c["supervisions"][0]["text"] for c in speech.values()] == ["Owl.", "Two wild boars."]
    assert sorted(sounds) == ["tuxpaint-sound-animals-birds-owl", "tuxpaint-sound-household-bell"]
    assert sounds["tuxpaint-sound-household-bell"]["custom"]["caption"] == "A bicycle bell."
    assert all(c["custom"]["tasks"] == ["caption", "text_to_sound"] for c in sounds.values())
    # the recordings are the installed files, by absolute path
    src = sounds["tuxpaint-sound-household-bell"]["recording"]["sources"][0]["source"]
    assert src == str(stamps / "household" / "bell.ogg")
    out = realsets.write_set("tuxpaint", tmp_path / "set")
    loaded = load_corpus_cuts(out, "test")
    assert len(loaded) == 4 and not list(out.rglob("*.ogg"))
    wav = loaded[0].load_audio()
    assert wav.shape == (1, int(0.4 * 22050)) and abs(float(np.abs(wav).max()) - 0.2) < 0.01


def test_missing_package_and_unknown_set_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(realsets, "TUXPAINT_STAMPS", tmp_path / "none")
    with pytest.raises(UnisonoError, match="apt-get install tuxpaint-stamps-default"):
        realsets.tuxpaint_cuts()
    with pytest.raises(UnisonoError, match="the sets are: tuxpaint"):
        realsets.write_set("nope", tmp_path / "x")


def test_eval_scores_a_set_by_name_without_a_train_split(stamps, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--data", "tuxpaint", "--tasks", "text_to_sound", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "sets" / "tuxpaint" / "manifests" / "test" / "cuts.jsonl").exists()
    assert "classifier metrics" in metrics["note"]
    ref = metrics["tasks"]["text_to_sound"]["systems"]["reference"]
    assert set(ref) == {"event_count_abs_err", "event_count_acc", "fd"}  # no classifier metric (it needs a train split)
    assert ref["event_count_acc"]["n"] == 2
