"""`unisono eval --checkpoint` on a tiny checkpoint: the model is scored beside the ceiling and baselines."""

import json

from unisono.cli import main


def test_eval_scores_a_checkpoint_beside_the_reference(tiny_checkpoint, tmp_path, capsys):
    corpus = tiny_checkpoint.parent / "corpus"
    out = tmp_path / "report"
    argv = ["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(corpus), "--split", "test",
            "--tasks", "se,audio_edit", "--n", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for task in ("se", "audio_edit"):
        systems = metrics["tasks"][task]["systems"]
        assert {"model", "reference", "copy_input"} <= set(systems), systems.keys()
        assert "mel_distance" in systems["model"] and "mel_distance" in systems["reference"]
        # the reference scores perfectly against itself; the random tiny model cannot
        assert systems["reference"]["mel_distance"]["mean"] < systems["model"]["mel_distance"]["mean"]
        # the ceiling of the model's tokens: the reference through the checkpoint's codec, scored as an output
        assert 0.0 < systems["codec_resynthesis"]["mel_distance"]["mean"] < float("inf")
    from unisono.eval.corpus import load_corpus_cuts, select_cuts
    from unisono.eval.metrics import Reference, score
    from unisono.eval.model_system import CodecResynthesisSystem
    from unisono.inference import Pipeline

    cut = select_cuts(load_corpus_cuts(corpus, "test"), "se", 1, 0)[0]
    wav, sr = CodecResynthesisSystem(Pipeline.from_pretrained(tiny_checkpoint))("se", cut)
    from unisono.eval.corpus import cut_audio

    direct = score("mel", wav, Reference(cut.id, audio=cut_audio(cut)))["mel_distance"]
    assert abs(direct - metrics["tasks"]["se"]["systems"]["codec_resynthesis"]["mel_distance"]["mean"]) < 1e-6
    report = (out / "report.md").read_text()
    assert "| model |" in report and "copy the input (baseline)" in report
    assert "unisono eval --checkpoint" in report
    assert main(argv) == 0  # a second run is served from the item cache
