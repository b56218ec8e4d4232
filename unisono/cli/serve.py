"""``unisono serve``: the HTTP API and web page for a checkpoint."""

from __future__ import annotations

from pathlib import Path

from unisono.cli.generate import add_enhance_argument, add_quant_arguments, check_enhance
from unisono.errors import UnisonoError

DESCRIPTION = """Serve a checkpoint over HTTP: a JSON + multipart API described by OpenAPI (/docs), OpenAI's audio
routes (/v1/audio/speech, /v1/audio/transcriptions), and a web page at / to pick a task, fill its inputs (text,
upload or record audio), generate, listen and download. Binds to 127.0.0.1 unless --host says otherwise.
--enhance [DIR]: every audio answer (streamed ones too) is the enhancement stage's 48 kHz stereo. See
docs/serve.md."""


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", help="checkpoint directory (default: the shipped model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_quant_arguments(p)
    p.add_argument("--max-queue", type=int, default=32, help="requests queued or running before 503 (default 32)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch of concurrent requests (default 8)")
    p.add_argument("--max-output-seconds", type=float, default=30.0, help="longest audio a request may ask for")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before a generation is cancelled (504)")
    p.add_argument("--voice", action="append", default=[], metavar="NAME=FILE",
                   help="a voice of /v1/audio/speech: the speaker prompt in audio FILE, called NAME (repeatable; "
                        "'default' is the checkpoint's own prompt)")
    add_enhance_argument(p)


def parse_voices(specs: list[str]) -> dict[str, Path]:
    """``["NAME=FILE", ...]`` -> ``{NAME: FILE}``, each file there (checked before the model loads)."""
    voices = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UnisonoError(f"--voice takes NAME=FILE, got {spec!r}")
        if name in voices:
            raise UnisonoError(f"--voice {name!r} is given twice")
        if not Path(path).is_file():
            raise UnisonoError(f"--voice {name}: {path} is not a file")
        voices[name] = Path(path)
    return voices


def main(args) -> int:
    import uvicorn

    from unisono.inference import Pipeline
    from unisono.serve import ServerLimits, create_app

    voices = parse_voices(args.voice)
    check_enhance(args)
    pipe = Pipeline.from_pretrained(args.checkpoint, int8=args.int8, int4=args.int4, enhance=args.enhance)
    limits = ServerLimits(max_queue=args.max_queue, max_batch=args.max_batch,
                          max_output_seconds=args.max_output_seconds, timeout_s=args.timeout)
    app = create_app(pipe, limits, title=f"unisono: {pipe.name}", voices=voices)
    print(f"serving {pipe.name} ({len(pipe.tasks)} tasks) on http://{args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
