"""The corpus's speech engines side by side: speed, intelligibility and how distinct their voices are.

    python benchmarks/speech_engines.py [--voices 6] [--engines espeak kokoro piper festival flite] [--json OUT]

For each engine, ``--voices`` of its voices (its held-out ones first, then the others, in a fixed order) each say
at least two sentences (``--utterances`` per engine in all) of the test split's held-out sentence pool with the
corpus's utterance controls, one thread:
- audio hours per CPU hour (synthesis only, children processes included; the first, warm-up call not counted);
- Whisper tiny.en WER (the evaluator of ``unisono eval``) over all its utterances;
- speaker similarity (resemblyzer cosine): the first two utterances of one voice, and first utterances of two different
  voices of the engine (a voice encoder that tells voices apart scores the first clearly above the second).
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("UNISONO_SYNTH_THREADS", "1")

SR = 16000


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv=None) -> int:
    import numpy as np

    from unisono.data.synth import engines as E
    from unisono.data.synth import text as T
    from unisono.data.synth import voices as V
    from unisono.eval.metrics.speaker import speaker_similarity
    from unisono.eval.metrics.wer import transcribe, wer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", nargs="+", default=list(V.ENGINES))
    ap.add_argument("--voices", type=int, default=6, help="voices per engine (default 6)")
    ap.add_argument("--utterances", type=int, default=12,
                    help="at least this many utterances per engine (default 12; 2 per voice at the least)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch_threads = 1
    import torch

    torch.set_num_threads(torch_threads)
    rows = []
    for engine in args.engines:
        why = E.unavailable(engine)
        if why:
            print(f"{engine}: skipped ({why})", file=sys.stderr)
            continue
        held = V.HELD_OUT_BY_ENGINE[engine]
        voices = (held + [v for v in V.TRAIN_BY_ENGINE[engine] if v not in held])[: args.voices]
        rng = np.random.default_rng(args.seed)
        V.speak("A warm-up sentence.", V.utterance_params(voices[0], rng), SR)  # loads the engine's model
        audio_s = cpu = 0.0
        errors, firsts, same = [], [], []
        per_voice = max(2, -(-args.utterances // len(voices)))
        for voice in voices:
            pair = []
            for _ in range(per_voice):
                sent = T.render(T.sentence_for_split(rng, "test"))
                params = V.utterance_params(voice, rng)
                c0 = cpu_seconds()
                x = V.speak(sent, params, SR)
                cpu += cpu_seconds() - c0
                audio_s += x.size / SR
                errors.append(wer(transcribe(x, SR), sent))
                pair.append(x)
            same.append(speaker_similarity(pair[0], pair[1], SR))
            firsts.append(pair[0])
        other = [speaker_similarity(firsts[i], firsts[i + 1], SR) for i in range(len(firsts) - 1)]
        rows.append({"engine": engine, "voices": [v.id for v in voices], "utterances": len(errors),
                     "audio_s": round(audio_s, 1), "cpu_s": round(cpu, 2),
                     "audio_hours_per_cpu_hour": round(audio_s / max(cpu, 1e-9), 1),
                     "wer": round(float(np.mean(errors)), 4),
                     "speaker_sim_same_voice": round(float(np.mean(same)), 3),
                     "speaker_sim_other_voice": round(float(np.mean(other)), 3) if other else None})
    print(
        "| engine | voices | utterances | audio h per CPU h | WER (tiny.en) | speaker sim, same voice | other voice |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        other = "-" if r["speaker_sim_other_voice"] is None else f"{r['speaker_sim_other_voice']:.3f}"
        print(f"| {r['engine']} | {len(r['voices'])} | {r['utterances']} | {r['audio_hours_per_cpu_hour']:.1f} | "
              f"{r['wer']:.3f} | {r['speaker_sim_same_voice']:.3f} | {other} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"benchmark": "speech_engines", "machine": platform.machine(),
                                               "cpu_count": os.cpu_count(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
