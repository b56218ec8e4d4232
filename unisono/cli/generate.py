"""``unisono generate TASK --INPUT VALUE ... -o out.wav``: run one task of a checkpoint."""

from __future__ import annotations

import difflib
import sys
import time
from pathlib import Path

from unisono import checkpoint as C
from unisono.audio import AUDIO_EXTENSIONS
from unisono.errors import UnisonoError
from unisono.fileio import check_writable
from unisono.inference.types import check_input_names, task_spec
from unisono.options import default_options

DESCRIPTION = """Run one task of a trained checkpoint. Inputs are given as --NAME VALUE: text as a string, audio
as a file path (WAV/FLAC/OGG, any sample rate). Audio outputs are written to -o (WAV or FLAC); text outputs
are printed (and written to -o if given). Reasoning tasks (text_to_sound_reasoning, ...) write a text plan
and then the audio in one pass: the plan is printed. --revise N: generate, caption the output with the
checkpoint's caption task, and regenerate with the next seed while the caption misses a sound event or
instrument the request names, at most N more times; the rounds' captions are printed. --enhance [DIR]: the
enhancement stage after the codec turns the 16 kHz mono decode into 48 kHz stereo (the checkpoint's enhancer/,
or the enhancer in DIR; train one with `unisono codec train-enhancer`).

examples:
  unisono generate tts --text "The old baker painted the door." --prompt speaker.wav -o out.wav
  unisono generate se --noisy noisy.wav -o clean.wav
  unisono generate asr --speech speech.wav
  unisono generate text_to_sound --caption "A dog barks at 0.5 s, then a bell rings." -o sound.wav
  unisono generate text_to_sound_reasoning --caption "A dog barks at 0.5 s, then a bell rings." -o s.wav --revise 3
  unisono generate text_to_music --caption "A calm piano melody." -o music48k.wav --enhance runs/enhancer/enhancer"""
ACCEPTS_EXTRA = True  # the task inputs: --NAME VALUE pairs
INT8_HELP = ("quantize the language model's weights to int8 (CPU): about 2x faster generation at batch 1; "
             "validation loss within 0.1 %% on the shipped model (docs/lm.md)")
INT4_HELP = ("quantize the transformer's linear layers to 4 bits in groups of 32 (CPU; heads int8): faster "
             "than --int8 again, validation loss within 0.3 %% on the shipped model (docs/lm.md)")


def add_quant_arguments(p) -> None:
    """``--int8`` / ``--int4`` (one or neither), for generate, serve and eval."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--int8", action="store_true", help=INT8_HELP)
    g.add_argument("--int4", action="store_true", help=INT4_HELP)


def _task_help() -> str:
    from unisono.inference import input_name
    from unisono.tasks import load_templates

    lines = ["tasks of the built-in templates and their inputs (a checkpoint lists its own with --list):"]
    for name, tpl in sorted(load_templates().items()):
        ins = []
        for c in tpl.conditions:
            kind = "audio" if c.is_audio_source else "text"
            arg = f"--{input_name(c, tpl)} {kind.upper()}"
            if arg not in ins:  # one source read twice (its codec tokens and its features) is one input
                ins.append(arg)
            if c.mask_span:
                ins.append(f"--{c.name}_span START,END")
        out = "audio" if tpl.target.modality == "codec" else "text"
        if tpl.plan:
            out = "plan + " + out
        lines.append(f"  {name:<14} {' '.join(ins)}  -> {out}")
    return "\n".join(lines)


def add_arguments(p) -> None:
    p.epilog = _task_help()
    p.add_argument("task", nargs="?", help="the task to run (see below)")
    p.add_argument("--checkpoint", help="checkpoint directory (default: the shipped model)")
    p.add_argument("-o", "--output", help="output file (.wav or .flac for audio; .txt for text)")
    p.add_argument("--list", action="store_true", help="list the checkpoint's tasks with their inputs and exit")
    g = p.add_argument_group("generation options (defaults depend on the task)")
    g.add_argument("--top-k", type=int, help="sample among the k most likely tokens (0 = all)")
    g.add_argument("--top-p", type=float, help="nucleus sampling threshold in (0, 1]")
    g.add_argument("--temperature", type=float, help="sampling temperature (> 0)")
    g.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (1 = off)")
    g.add_argument("--seed", type=int, help="random seed (same seed, same output)")
    add_quant_arguments(g)
    g.add_argument("--max-duration", type=float, help="longest output in seconds")
    g.add_argument("--revise", type=int, default=0, metavar="N",
                   help="generate, listen (caption the output), revise: at most N more rounds with new seeds while "
                        "the caption misses an event or instrument of the request (audio tasks; default 0)")
    add_enhance_argument(g)


def add_enhance_argument(p) -> None:
    """``--enhance [DIR]``, for generate and serve."""
    p.add_argument("--enhance", nargs="?", const=True, default=None, metavar="DIR",
                   help="run the enhancement stage after the codec: audio outputs become 48 kHz stereo; DIR: an "
                        "enhancer directory (default: the checkpoint's enhancer/)")


def check_enhance(args) -> None:
    """``--enhance`` checked before the model loads: the checkpoint's enhancer/ or DIR must be an enhancer."""
    if args.enhance is True:
        C.enhancer_dir(args.checkpoint or C.DEFAULT_CHECKPOINT)
    elif args.enhance is not None and not (Path(args.enhance) / "config.json").is_file():
        raise UnisonoError(f"--enhance {args.enhance} is not an enhancer directory (needs config.json and "
                           "model.safetensors; `unisono codec train-enhancer` writes OUT/enhancer)")


OPTION_FIELDS = ("top_k", "top_p", "temperature", "guidance_scale", "seed", "max_duration")


def parse_inputs(rest: list[str]) -> dict[str, str]:
    inputs: dict[str, str] = {}
    i = 0
    while i < len(rest):
        key = rest[i]
        if not key.startswith("--") or len(key) < 3:
            raise UnisonoError(f"inputs are given as --NAME VALUE; could not read {key!r}")
        if i + 1 >= len(rest) or rest[i + 1].startswith("--"):
            raise UnisonoError(f"{key} has no value; inputs are given as --NAME VALUE")
        inputs[key[2:].replace("-", "_")] = rest[i + 1]
        i += 2
    return inputs


def check_option_spelling(args, rest: list[str], inputs: set[str]) -> None:
    """Refuse a ``--FLAG`` among the free-form task inputs that is no input name but close to an option of the
    command (``--tpo-k``: did you mean ``--top-k``?)."""
    options = [f"--{k.replace('_', '-')}" for k in vars(args) if k not in ("task", "command_line")]
    for token in rest:
        name = token[2:].replace("-", "_")
        if token.startswith("--") and name not in inputs:
            flag = "--" + name.replace("_", "-")
            close = difflib.get_close_matches(flag, options + [f"--{n}" for n in sorted(inputs)], n=1)
            if close and close[0] in options:
                raise UnisonoError(f"unknown option {flag} (did you mean {close[0]}?); see unisono generate --help")


def check_request(args, rest: list[str]) -> dict[str, str]:
    """Every argument checked before anything heavy loads (the model, the codec): the output path, the task
    against the checkpoint's tasks (read from its vocab.json and tasks.yaml), the task inputs (a misspelled
    option named as such), audio input files, the sampling options. Returns the inputs."""
    if args.revise < 0:
        raise UnisonoError(f"--revise must be >= 0, got {args.revise}")
    if args.output:
        check_writable(args.output, flag="-o")
    check_enhance(args)
    templates = C.task_templates(C.require_checkpoint(args.checkpoint or C.DEFAULT_CHECKPOINT))
    specs = {name: task_spec(tpl) for name, tpl in templates.items()}
    known = set(specs[args.task].inputs) if args.task in specs else {n for s in specs.values() for n in s.inputs}
    check_option_spelling(args, rest, known | {"audio"})
    if args.list or not args.task:
        if rest:
            raise UnisonoError(f"unknown argument(s) {' '.join(rest)}: task inputs need a task (and no --list); "
                               "see unisono generate --help")
        return {}
    inputs = parse_inputs(rest)
    if args.task not in specs:
        raise UnisonoError(f"unknown task {args.task!r}; this checkpoint can do: {', '.join(sorted(specs))}")
    spec = specs[args.task]
    inputs = check_input_names(spec, inputs)
    for name, value in inputs.items():
        if spec.inputs[name] == "audio" and not Path(value).is_file():
            raise UnisonoError(f"--{name} {value}: no such audio file")
    if spec.output == "audio" and not args.output:
        raise UnisonoError(f"task {args.task} makes audio: give an output file with -o out.wav")
    if spec.output == "audio" and Path(args.output).suffix.lower() not in AUDIO_EXTENSIONS:
        raise UnisonoError(f"-o {args.output}: task {args.task} makes audio; the file must end with one of "
                           f"{', '.join(AUDIO_EXTENSIONS)}")
    changes = {k: getattr(args, k) for k in OPTION_FIELDS if getattr(args, k) is not None}
    default_options(spec.output).with_(**changes).validate()
    return inputs


def main(args, rest: list[str] | None = None) -> int:
    from unisono import audio
    from unisono.inference import AudioOutput, Pipeline

    inputs = check_request(args, rest or [])
    pipe = Pipeline.from_pretrained(args.checkpoint, int8=args.int8, int4=args.int4, enhance=args.enhance)
    if args.list or not args.task:
        for spec in pipe.tasks.values():
            ins = " ".join(f"--{n} {k.upper()}" for n, k in spec.inputs.items())
            print(f"{spec.name:<14} {ins}  -> {spec.output}   {spec.description}")
        return 0
    if args.task not in pipe.tasks:
        raise UnisonoError(f"unknown task {args.task!r}; this checkpoint can do: {', '.join(pipe.tasks)}")
    options = pipe.default_options(args.task)
    changes = {k: getattr(args, k) for k in OPTION_FIELDS if getattr(args, k) is not None}
    options = options.with_(**changes).validate()
    spec = pipe.tasks[args.task]
    t0 = time.perf_counter()
    from tqdm import tqdm

    with tqdm(desc=f"generating {args.task}", unit="frame", file=sys.stderr, leave=False) as bar:
        def progress(done, total):
            bar.total = total
            bar.update(done - bar.n)

        if args.revise:
            out = pipe.generate_revised(args.task, inputs, options, rounds=args.revise, progress=progress)
        else:
            out = pipe.generate_batch(args.task, [inputs], options, progress=progress)[0]
    took = time.perf_counter() - t0
    if isinstance(out, AudioOutput):
        if out.plan is not None:
            print(f"plan: {out.plan}")
        rev = out.info.get("revise")
        if rev:
            print(f"request names: {', '.join(rev['request_terms']) or '(no event or instrument)'}")
            for r in rev["rounds"]:
                mark = "*" if r["round"] == out.info.get("round") else " "
                print(f"{mark} round {r['round']} (seed {r['seed']}): agreement {r['agreement']:.2f}; "
                      f"caption: {r['caption']!r}")
        audio.save(args.output, out.wav, out.sample_rate)
        chans = "" if out.wav.ndim == 1 else f", {out.wav.shape[0]} channels (enhanced)"
        print(f"wrote {args.output}: {out.duration:.2f} s at {out.sample_rate} Hz{chans} in {took:.1f} s "
              f"(real-time factor {out.duration / max(took, 1e-9):.2f})")
    else:
        print(out.text)
        if args.output:
            from unisono.fileio import write_text

            write_text(args.output, out.text + "\n")
    return 0
