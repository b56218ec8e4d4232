"""``unisono synth``: make the built-in multi-task corpus offline."""

from __future__ import annotations

import os

from unisono.data.synth import voices
from unisono.data.synth.build import synthesize
from unisono.fileio import check_writable

DESCRIPTION = """Make a multi-task audio corpus offline, from real synthesizers: speech from espeak-ng
(30 voices, 4 of them heard in the test split only) and natural voices (Kokoro: 25 blends, Piper: 1,
Festival: 3, Flite: 4; held-out voices of each), singing, music from FluidSynth, procedural sound
events and scenes, and the pairs every task needs (noisy/clean, reverberant/dry, two-speaker mixtures,
voice-conversion pairs, speech edits, audio edits). Writes 16 kHz FLAC, Lhotse manifests (JSONL),
stats.json and README.md. Deterministic for a seed; an interrupted run resumes when started again."""


def add_arguments(p) -> None:
    p.add_argument(
        "--out",
        required=True,
        help="output directory (created; run again to resume: options not given are the corpus's own)",
    )
    p.add_argument("--hours", type=float, default=0.05, help="about how many hours of primary audio (default 0.05)")
    p.add_argument("--seed", type=int, default=1, help="random seed; the same seed gives the same corpus (default 1)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="parallel worker processes (default: min(2, CPU cores))")
    p.add_argument("--engines", metavar="ENGINE=SHARE,...",
                   help="speech engines and their shares of the speakers, e.g. 'espeak=0.5,kokoro=0.3,piper=0.2' or "
                        "'espeak' (espeak-ng alone: the corpora of before natural voices). Engines: espeak, kokoro, "
                        "piper, festival, flite; one that is not installed is left out with a note. Default: "
                        "espeak=0.5,kokoro=0.2,piper=0.15,festival=0.05,flite=0.1")
    p.add_argument("--sound-font", choices=("musescore", "fluidr3"),
                   help="General MIDI font of the music: musescore (MuseScore General, fuller instruments; the default "
                        "where installed) or fluidr3 (FluidR3, the font of corpora before it)")
    p.add_argument("--real-sounds", choices=("on", "off"),
                   help="sounds and scenes also use recorded one-shots (10 classes from Debian's sonic-pi-samples: "
                        "drums, tabla, snaps, a door, a crow, record scratches); default: on where installed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args) -> int:
    check_writable(args.out, "dir", "--out")
    mix = voices.parse_engine_mix(args.engines) if args.engines is not None else None
    stats = synthesize(args.out, hours=args.hours, seed=args.seed, workers=args.workers, progress=not args.quiet,
                       engines=mix, sound_font=args.sound_font,
                       real_sounds=None if args.real_sounds is None else args.real_sounds == "on")
    made, failed = stats["jobs"]["made"], stats["jobs"]["failed"]
    hours = sum(s["hours"] for s in stats["splits"].values())
    print(f"wrote {args.out}: {hours:.3f} h of primary audio in "
          f"{sum(s['cuts'] for s in stats['splits'].values())} cuts ({made} jobs"
          f"{f', {failed} failed: see stats.json' if failed else ''}); tasks: {', '.join(stats['hours_per_task'])}")
    return 0
