"""The ``unisono`` command line: a thin layer over the Python API.

Each subcommand lives in its own module of this package, imported only when that subcommand runs (so
``unisono --help`` stays fast). A subcommand module provides ``add_arguments(parser)`` and ``main(args) -> int``
(and ``DESCRIPTION``); it parses and prints, the library does the work. Nothing outside ``unisono.cli``
imports it. To add a subcommand, add one line to :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from unisono import __version__
from unisono.errors import UnisonoError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("unisono.cli.synth", "make the built-in multi-task corpus offline (speech, music, sounds, pairs)"),
    "tokenize": ("unisono.cli.tokenize", "corpus manifests -> tokenizers, vocab.json and token shards for every task"),
    "export": ("unisono.cli.export", "a split's cuts with their codec codes (and audio) as a Lhotse Shar"),
    "inspect": ("unisono.cli.inspect", "print token shards in readable form (phones, text, notes, audio code counts)"),
    "codec": ("unisono.cli.codec", "neural audio codec: train, encode, decode, eval"),
    "generate": ("unisono.cli.generate", "run a task of a checkpoint: text/audio in, audio/text out"),
    "serve": ("unisono.cli.serve", "HTTP API (OpenAPI) and web page for a checkpoint"),
    "eval": ("unisono.cli.eval", "score audio against references (WER, speaker similarity, PESQ, ...)"),
    "train": ("unisono.cli.train", "train the language model on token shards (one process or torchrun)"),
    "finetune": ("unisono.cli.finetune", "teach a checkpoint a new task (new task id; LoRA, frozen layers or full)"),
    "dpo": ("unisono.cli.dpo", "preference-tune a checkpoint (DPO) on its own samples ranked by an evaluator"),
    "recipe": ("unisono.cli.recipe", "corpus -> codec -> tokens -> model -> evaluation in one resumable command"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="unisono",
        description="unisono: one transformer over neural-codec tokens for many audio tasks.",
        epilog=f"commands:\n{lines}\n\nRun 'unisono COMMAND --help' for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"unisono {__version__}")
    p.add_argument("command", nargs="?", help="one of the commands below")
    return p


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a note is made (not as it was when the handler was made)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _log_to_stderr() -> None:
    """The library's notes (``logging.getLogger("unisono")``, INFO and up) on stderr, as the commands' own lines."""
    log = logging.getLogger("unisono")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv)  # handles --help / --version
        top.print_help()
        return 0 if not argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose one of: {', '.join(COMMANDS)}")
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"unisono {name}",
        description=getattr(module, "DESCRIPTION", help_),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    accepts_extra = getattr(module, "ACCEPTS_EXTRA", False)  # free-form --NAME VALUE pairs (task inputs)
    if accepts_extra:
        args, extra = parser.parse_known_args(rest)
    else:
        args = parser.parse_args(rest)
    args.command_line = " ".join(["unisono", name, *rest])  # for reports that record how they were made
    _log_to_stderr()
    try:
        return int((module.main(args, extra) if accepts_extra else module.main(args)) or 0)
    except UnisonoError as e:
        print(f"unisono {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unisono {name}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
