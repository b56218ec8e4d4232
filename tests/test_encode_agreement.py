"""One segment encoder for training and inference: the prompt the pipeline makes for a corpus cut equals the
prefix of the training example tokenization makes from the same cut (same conditions, same tokens)."""

import numpy as np
import pytest
import torch

from unisono.data.manifests import load_cuts
from unisono.data.tokenize import CorpusExampleMaker
from unisono.encode import SegmentEncoder, span_mask
from unisono.errors import UnisonoError
from unisono.inference import Pipeline
from unisono.options import GenerationOptions

pytestmark = pytest.mark.usefixtures("one_thread")


def _wav(obj):
    from unisono.data.tokenize import cut_audio

    return cut_audio(obj, 16000)[0].numpy()


@pytest.fixture(scope="module")
def setting(tiny_checkpoint):
    pipe = Pipeline.from_pretrained(tiny_checkpoint)
    cuts = load_cuts(tiny_checkpoint.parent / "corpus", "train")
    maker = CorpusExampleMaker(pipe.templates, pipe.vocab, pipe.tok, pipe.codec, cuts, seed=0)
    return pipe, maker, cuts


def _check(pipe, maker, task, cut, inputs):
    ex = maker.make(task, cut.id)
    prep = pipe.io(task).prepare(inputs, GenerationOptions(max_duration=5.0))
    n = prep.prompt.shape[0]
    assert torch.equal(prep.prompt, ex["frames"][:n]), task
    assert torch.equal(prep.uncond[ex["cond_mask"][:n]], torch.full_like(prep.uncond[ex["cond_mask"][:n]],
                                                                         pipe.vocab.pad_id))
    assert not ex["loss_mask"][:n].any()  # the prompt is all condition: no target token in it


def test_inference_prompts_equal_the_training_examples_prefix(setting):
    pipe, maker, cuts = setting
    speech = [c for c in cuts if c.custom["kind"] == "speech"]
    io = pipe.io("tts")
    done = set()
    for cut in speech:
        _check(pipe, maker, "asr", cut, {"speech": (_wav(cut), 16000)})
        done.add("asr")
        spec = pipe.templates["tts"].conditions[1]
        other = maker.source(spec, cut, maker._rng("tts", cut.id, 0))
        # phones: the corpus's are in the voice's accent, the pipeline's in its language (en-us): compare where
        # they agree; a window of a prompt longer than 3 s is random in training, the start at inference
        if (
            cut.supervisions[0].custom["phones"] == io.phones(cut.supervisions[0].text)
            and other.duration <= spec.seconds
        ):
            _check(pipe, maker, "tts", cut, {"text": cut.supervisions[0].text, "prompt": (_wav(other), 16000)})
            done.add("tts")
    for cut in (c for c in cuts if c.custom["kind"] == "noisy"):
        _check(pipe, maker, "se", cut, {"noisy": (_wav(cut.custom["noisy"]), 16000)})
        done.add("se")
    assert done == {"asr", "tts", "se"}


def test_span_masks_and_unknown_phones_are_the_same_rule_everywhere(setting):
    pipe = setting[0]
    m = span_mask((0.1, 0.25), 50, 50.0)
    assert m.nonzero().flatten().tolist() == list(range(5, 13))  # start floored, end rounded up
    with pytest.raises(UnisonoError, match="covers no frame"):
        span_mask((0.5, 0.5), 50, 50.0)
    enc = SegmentEncoder(pipe.vocab, pipe.tok, pipe.codec)
    with pytest.raises(UnisonoError, match="outside the phone inventory"):
        enc.phones_segment("ж щ ы ю я ъ ь", "input 'text'")
    assert np.array_equal(enc.codes(torch.zeros(1, 3200)).shape, (pipe.vocab.num_codebooks, 10))

