"""Listen and revise: generate audio, caption it, and generate again while the caption misses what was asked.

The request's terms and the caption's are compared by :meth:`unisono.reasoning.Terms.agreement` (the event
classes and instruments each names, out of those the checkpoint was trained on: its ``tokenizers/terms.json``).
"""

from __future__ import annotations

from unisono.errors import UnisonoError
from unisono.inference.types import AudioOutput
from unisono.reasoning import Terms


def generate_revised(pipe, task: str, inputs: dict, options=None, rounds: int = 2, captioner=None, cancel=None,
                     progress=None, terms: Terms | None = None) -> AudioOutput:
    """Generate ``task``'s audio, caption it (with the checkpoint's ``caption`` task, or
    ``captioner(wav float32 [S], sample_rate) -> str``), compare the terms the caption names with those the
    request's text inputs name, and while some are missing generate again with the next seed
    (``options.seed + round``), at most ``rounds`` more times. Returns the output that agreed best (the
    earliest among equals) with ``info["revise"]``: the request's terms, and per round its seed, caption,
    agreement and plan. ``terms``: the classes and instruments to compare (default: the checkpoint's)."""
    spec = pipe.io(task).spec
    if spec.output != "audio":
        raise UnisonoError(f"task {task!r} answers with text; revise works on audio outputs")
    if not isinstance(rounds, int) or rounds < 0:
        raise UnisonoError(f"revise rounds must be an integer >= 0, got {rounds!r}")
    terms = terms or pipe.tok.terms
    if terms is None:
        raise UnisonoError("revise needs the sound classes and instruments the model knows: this checkpoint has "
                           "no tokenizers/terms.json (re-run `unisono tokenize`), or pass terms=")
    if captioner is None:
        if "caption" not in pipe.tasks:
            raise UnisonoError("revise needs a captioner: this checkpoint has no 'caption' task; pass captioner=")

        def captioner(wav, sr):
            return pipe.generate("caption", audio=(wav, sr), cancel=cancel).text
    options = (options or pipe.default_options(task)).validate()
    request = " ".join(str(v) for k, v in inputs.items() if spec.inputs.get(k) == "text" and isinstance(v, str))
    history, best, best_score = [], None, -1.0
    for r in range(rounds + 1):
        out = pipe.generate_batch(task, [inputs], options.with_(seed=options.seed + r), cancel=cancel,
                                  progress=progress, enhance=False)[0]
        caption = captioner(out.wav, out.sample_rate) if out.wav.size else ""
        score = terms.agreement(request, caption)
        history.append({"round": r, "seed": options.seed + r, "caption": caption, "agreement": score,
                        "plan": out.plan})
        if score > best_score:
            best, best_score = out, score
            best.info["round"] = r
        if score >= 1.0:
            break
    best.info["revise"] = {"request_terms": sorted(terms.find(request)), "rounds": history}
    return best
