"""Plan, run (in parallel, resumable) and index a built-in corpus.

A run is a list of seeded jobs (the plan, fixed by ``hours`` and ``seed``). Each job writes its audio
files atomically and then its record ``items/{job_id}.json``; a job whose record exists is done, so an
interrupted run resumes where it stopped. The manifests, ``stats.json`` and ``README.md`` are written
last, from the records, in a fixed order: the same seed gives byte-identical manifests.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import traceback
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from unisono import audio
from unisono.errors import UnisonoError
from unisono.fileio import read_json, write_json, write_jsonl, write_text
from unisono.text.g2p import phonemize

from . import kinds, music, tools
from . import text as T
from . import voices as V
from .kinds import SAMPLE_RATE, Job

log = logging.getLogger("unisono")

PLAN_VERSION = 2  # 2: vc_pair and singing cuts carry a `prompt` recording
VOICES_VERSION = 2  # of corpora with natural voices; 2: no held-out voice as a second speaker outside the test split


def synth_options(spec: dict) -> str:
    """The ``unisono synth`` options that make the corpus of plan ``spec`` (every generator setting spelled out)."""
    engines = ",".join(f"{e}={w:g}" for e, w in spec.get("engines", V.ESPEAK_ONLY).items())
    return (f"--hours {spec.get('hours')} --seed {spec.get('seed')} --engines {engines} --sound-font "
            f"{spec.get('sound_font', 'fluidr3')} --real-sounds {'on' if spec.get('real_sounds') else 'off'}")
SPLITS = ("train", "valid", "test")
MIN_JOBS = {"train": 3, "valid": 1, "test": 1}


def make_plan(hours: float, seed: int) -> list[Job]:
    """Jobs for about ``hours`` of primary audio; every kind gets jobs in every split."""
    if not hours > 0:
        raise UnisonoError(f"--hours must be positive, got {hours}")
    jobs = []
    for k, (kind, (share, seconds)) in enumerate(kinds.SHARES.items()):
        n = max(sum(MIN_JOBS.values()), int(round(hours * 3600 * share / seconds)))
        n_valid = max(MIN_JOBS["valid"], int(round(0.1 * n)))
        n_test = max(MIN_JOBS["test"], int(round(0.1 * n)))
        splits = ["valid"] * n_valid + ["test"] * n_test + ["train"] * (n - n_valid - n_test)
        order = np.random.default_rng([seed, k, 7]).permutation(n)
        for j in range(n):
            job_seed = int(np.random.SeedSequence([seed, k, j]).generate_state(1)[0])
            jobs.append(Job(f"{kind}-{j:05d}", kind, splits[order[j]], job_seed))
    return jobs


def _py(obj):
    """Plain JSON types (NumPy scalars and tuples become Python numbers and lists)."""
    if isinstance(obj, dict):
        return {str(k): _py(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_py(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _recording(rec_id: str, rel_path: str, num_samples: int) -> dict:
    return {
        "id": rec_id,
        "sources": [{"type": "file", "channels": [0], "source": rel_path}],
        "sampling_rate": SAMPLE_RATE,
        "num_samples": int(num_samples),
        "duration": num_samples / SAMPLE_RATE,
        "channel_ids": [0],
    }


def _save(out: Path, rel: str, x: np.ndarray) -> int:
    x = np.asarray(x, dtype=np.float32)
    if x.size < SAMPLE_RATE * 0.1 or not np.any(np.abs(x) > 1e-4):
        raise UnisonoError(f"{rel} would be silent or shorter than 0.1 s")
    audio.save(out / rel, x, SAMPLE_RATE, subtype="PCM_16")
    return x.size


def run_job(job: Job, out: Path) -> dict:
    """Make one job's audio and write its record; returns the record."""
    rng = np.random.default_rng(job.seed)
    made_list = kinds.MAKERS[job.kind](job, rng)
    cuts = []
    for made in made_list:
        cut_id = job.id + made.suffix
        if made.midi is not None:
            mparams, notes = made.midi
            midi_rel = f"midi/{job.split}/{cut_id}.mid"
            if made.kind == "singing":
                music.write_midi(out / midi_rel, {"program": 52, "tempo_bpm": 60, "drums": False},
                                 [(p, s, e - s) for p, s, e in notes])  # beats at 60 BPM = seconds
            else:
                music.write_midi(out / midi_rel, mparams, notes)
                made.audio = audio.normalize_loudness(
                    music.render(out / midi_rel, mparams, notes, SAMPLE_RATE), kinds.SPEECH_DB
                )
            made.params = {**made.params, "midi": midi_rel}
        rel = f"audio/{job.split}/{cut_id}.flac"
        n = _save(out, rel, made.audio)
        custom = {"kind": made.kind, "tasks": made.tasks, "split": job.split, "params": _py(made.params)}
        for key in ("caption", "instruction"):
            if getattr(made, key):
                custom[key] = getattr(made, key)
        if made.qa:
            custom["qa"] = made.qa
        for role, x in made.roles.items():
            role_rel = f"audio/{job.split}/{cut_id}.{role}.flac"
            custom[role] = _recording(f"{cut_id}.{role}", role_rel, _save(out, role_rel, x))
        sup = {"id": cut_id, "recording_id": cut_id, "start": 0.0, "duration": n / SAMPLE_RATE, "channel": 0,
               "text": made.text, "language": "en"}
        if made.speaker:
            sup["speaker"] = made.speaker
        if made.phones_text:
            sup["custom"] = {"phones": phonemize([made.phones_text], made.phones_language)[0]}
        recording = _recording(cut_id, rel, n)
        cuts.append({"id": cut_id, "start": 0.0, "duration": n / SAMPLE_RATE, "channel": 0,
                     "supervisions": [sup], "recording": recording, "custom": custom, "type": "MonoCut"})
    record = {"job": job.id, "kind": job.kind, "split": job.split, "seed": job.seed, "cuts": cuts}
    write_json(out / "items" / f"{job.id}.json", record, indent=None)
    return record


def record_files(record: dict) -> list[str]:
    files = []
    for cut in record["cuts"]:
        files.append(cut["recording"]["sources"][0]["source"])
        files += [v["sources"][0]["source"] for v in cut["custom"].values() if isinstance(v, dict) and "sources" in v]
    return files


def _done(job: Job, out: Path) -> dict | None:
    path = out / "items" / f"{job.id}.json"
    if not path.exists():
        return None
    try:
        record = read_json(path)
    except UnisonoError:
        return None
    if record.get("seed") != job.seed or not all((out / f).exists() for f in record_files(record)):
        return None
    return record


def _worker(args) -> tuple[str, dict | None, str | None]:
    job, out = args
    try:
        return job.id, run_job(job, out), None
    except UnisonoError as e:
        return job.id, None, str(e)
    except Exception as e:  # a bug in a maker: keep going, report it
        return job.id, None, f"{type(e).__name__}: {e} | {traceback.format_exc(limit=3).splitlines()[-2].strip()}"


def _resolve_options(old: dict | None, engines, sound_font, real_sounds) -> tuple[dict, str, bool]:
    """The engine mix, sound font and real-sounds setting to use: the given ones; resuming, the corpus's own for
    those not given (a key absent = the setting of before it existed); else what is installed here."""
    if old is not None:
        engines = old.get("engines", V.ESPEAK_ONLY) if engines is None else engines
        sound_font = old.get("sound_font", "fluidr3") if sound_font is None else sound_font
        real_sounds = bool(old.get("real_sounds", False)) if real_sounds is None else real_sounds
    mix, missing = V.usable_mix(V.normalise_mix(V.DEFAULT_ENGINE_MIX if engines is None else engines))
    for engine, why in missing.items():
        log.warning(f"unisono synth: {engine} left out of the engine mix: {why}")
    if sound_font is None:
        sound_font = "musescore" if tools.musescore_font() else "fluidr3"
        if sound_font == "fluidr3":
            log.warning("unisono synth: music uses FluidR3 (for MuseScore General: apt-get install musescore-general-"
                        "soundfont, and pyfluidsynth with libfluidsynth)")
    if real_sounds is None:
        real_sounds = kinds.sounds.real_sounds_available()
        if not real_sounds:
            log.warning("unisono synth: sounds are procedural only (for recorded one-shots: apt-get install "
                        "sonic-pi-samples)")
    return mix, sound_font, bool(real_sounds)


def _corpus_spec(hours: float, seed: int, mix: dict, sound_font: str, real_sounds: bool) -> dict:
    """The corpus's plan.json: what a resume must match (keys of settings at their old value are left out)."""
    spec = {"version": PLAN_VERSION, "hours": hours, "seed": seed, "sample_rate": SAMPLE_RATE}
    if mix != V.ESPEAK_ONLY:
        spec["engines"] = mix
        spec["voices_version"] = VOICES_VERSION
    if sound_font != "fluidr3":
        spec["sound_font"] = sound_font
    if real_sounds:
        spec["real_sounds"] = True
    return spec


def _check_resume(out: Path, old: dict | None, spec: dict) -> None:
    if old is None:
        return
    if old.get("version") != spec["version"]:
        raise UnisonoError(f"{out} holds a corpus of an older format (version {old.get('version')}); "
                           "make a new one in another --out directory")
    if old != spec:
        older = old.get("voices_version", VOICES_VERSION) != VOICES_VERSION
        raise UnisonoError(f"{out} already holds a corpus made with {synth_options(old)}"
                           f"{' (an older version of the natural voices)' if older else ''}"
                           "; use another --out or the same options (and the same installed engines and "
                           "fonts) to resume it")


def _run_jobs(todo: list[Job], planned: int, out: Path, workers: int, progress: bool) -> tuple[dict, dict]:
    """Run ``todo`` (in ``workers`` forked processes when > 1): ``(records, failures)`` by job id."""
    records: dict[str, dict] = {}
    failures: dict[str, str] = {}
    bar = tqdm(total=len(todo), desc=f"synth {out.name}", unit="job", disable=not progress, file=sys.stderr)
    if planned > len(todo):
        bar.write(f"resuming: {planned - len(todo)} of {planned} jobs already done")
    args = [(job, out) for job in todo]
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    results = pool.imap_unordered(_worker, args, chunksize=1) if pool is not None else map(_worker, args)
    try:
        for job_id, rec, err in results:
            if rec is not None:
                records[job_id] = rec
            else:
                failures[job_id] = err
                bar.write(f"skipped {job_id}: {err}")
            bar.update(1)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
    return records, failures


def synthesize(out: str | Path, hours: float = 0.05, seed: int = 1, workers: int = 1, progress: bool = True,
               engines: dict[str, float] | None = None, sound_font: str | None = None,
               real_sounds: bool | None = None) -> dict:
    """Make (or resume) a corpus of about ``hours`` hours in ``out``; returns the stats.

    ``engines``: the speech engines' shares of the speakers (default :data:`voices.DEFAULT_ENGINE_MIX`); an
    engine that cannot run here is left out with one line on stderr, and the mix actually used is part of the
    corpus's plan (a corpus resumes only with the same one). espeak-ng alone gives the corpora of before.
    ``sound_font``: ``musescore`` (the default where it is installed) or ``fluidr3`` (the font of before).
    ``real_sounds``: sounds and scenes draw from recorded one-shots too (default: where installed).
    Resuming, an option left at ``None`` is the one the corpus was made with."""
    out = Path(out)
    versions = tools.check_all()
    plan_path = out / "plan.json"
    old = read_json(plan_path) if plan_path.exists() else None
    mix, sound_font, real_sounds = _resolve_options(old, engines, sound_font, real_sounds)
    spec = _corpus_spec(hours, seed, mix, sound_font, real_sounds)
    _check_resume(out, old, spec)
    # the generator's settings, for this process and the worker processes forked from it
    V.set_engine_mix(mix)
    tools.set_sound_font(sound_font)
    kinds.sounds.set_real_sounds(real_sounds)
    if sound_font == "musescore":
        versions["sound_font"] = Path(tools.musescore_font()).resolve().name
    versions["speech_engines"] = ", ".join(f"{e} {w:.0%}" for e, w in mix.items())
    out.mkdir(parents=True, exist_ok=True)
    if old is None:
        write_json(plan_path, spec)
    plan = make_plan(hours, seed)
    for p in [p for sub in ("audio", "midi", "items", "manifests") for p in (out / sub).rglob(".*.tmp*")]:
        p.unlink(missing_ok=True)  # temporary files of a run that was killed mid-write; never referenced
    records: dict[str, dict] = {}
    todo = []
    for job in plan:
        rec = _done(job, out)
        if rec is None:
            todo.append(job)
        else:
            records[job.id] = rec
    failures: dict[str, str] = {}
    if todo:
        made, failures = _run_jobs(todo, len(plan), out, workers, progress)
        records.update(made)
    if not records:
        raise UnisonoError(f"no item could be made; first error: {next(iter(failures.values()), 'unknown')}")
    return write_index(out, plan, records, failures, spec, versions)


def write_index(out: Path, plan: list[Job], records: dict, failures: dict, spec: dict, versions: dict) -> dict:
    """Write manifests (per split, sorted by cut id), stats.json and README.md."""
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for job in plan:
        if job.id in records:
            by_split[job.split].extend(records[job.id]["cuts"])
    task_hours: dict[str, dict[str, float]] = defaultdict(lambda: {s: 0.0 for s in SPLITS})
    task_cuts: dict[str, dict[str, int]] = defaultdict(lambda: {s: 0 for s in SPLITS})
    kind_cuts: dict[str, dict[str, int]] = defaultdict(lambda: {s: 0 for s in SPLITS})
    split_stats = {}
    sentences: dict[str, set] = {s: set() for s in SPLITS}
    words: set[str] = set()
    speakers: dict[str, set] = {s: set() for s in SPLITS}
    mix = spec.get("engines", V.ESPEAK_ONLY)
    held_voices = [v.id for e in mix for v in V.HELD_OUT_BY_ENGINE[e]]
    engine_cuts: dict[str, dict[str, int]] = {e: {s: 0 for s in SPLITS} for e in mix}
    engine_hours: dict[str, dict[str, float]] = {e: {s: 0.0 for s in SPLITS} for e in mix}
    instruments: dict[str, set] = {s: set() for s in SPLITS}
    for split, cuts in by_split.items():
        cuts.sort(key=lambda c: c["id"])
        mdir = out / "manifests" / split
        write_jsonl(mdir / "recordings.jsonl", [c["recording"] for c in cuts])
        write_jsonl(mdir / "supervisions.jsonl", [s for c in cuts for s in c["supervisions"]])
        write_jsonl(mdir / "cuts.jsonl", cuts)
        total_all = 0.0
        for c in cuts:
            hrs = c["duration"] / 3600
            kind = c["custom"]["kind"]
            kind_cuts[kind][split] += 1
            for t in c["custom"]["tasks"]:
                task_hours[t][split] += hrs
                task_cuts[t][split] += 1
            total_all += c["duration"] + sum(
                v["duration"] for v in c["custom"].values() if isinstance(v, dict) and "sources" in v
            )
            sup = c["supervisions"][0]
            if kind in ("speech", "noisy", "reverb", "mixture", "vc_pair", "speech_edit"):
                sentences[split].add(sup["text"].lower())
                words.update(w.strip(".?,").lower() for w in sup["text"].split())
            if "speaker" in sup:
                speakers[split].add(sup["speaker"])
                engine = V.VOICES_BY_ID[sup["speaker"]].engine
                engine_cuts.setdefault(engine, {s: 0 for s in SPLITS})[split] += 1
                engine_hours.setdefault(engine, {s: 0.0 for s in SPLITS})[split] += hrs
            if kind == "music":
                instruments[split].add(c["custom"]["params"]["instrument"])
        split_stats[split] = {"cuts": len(cuts), "hours": round(sum(c["duration"] for c in cuts) / 3600, 5),
                              "hours_all_audio": round(total_all / 3600, 5)}
    r = lambda d: {k: {s: round(v, 5) for s, v in sorted(x.items())} for k, x in sorted(d.items())}  # noqa: E731
    stats = {
        "seed": spec["seed"],
        "hours_requested": spec["hours"],
        "command": f"unisono synth {synth_options(spec)}",
        "sound_font": spec.get("sound_font", "fluidr3"),
        "real_sounds": bool(spec.get("real_sounds", False)),
        "sample_rate": SAMPLE_RATE,
        "splits": split_stats,
        "hours_per_task": r(task_hours),
        "cuts_per_task": {k: dict(v) for k, v in sorted(task_cuts.items())},
        "cuts_per_kind": {k: dict(v) for k, v in sorted(kind_cuts.items())},
        "speakers": {s: len(v) for s, v in speakers.items()},
        "distinct_sentences": {s: len(v) for s, v in sentences.items()},
        "distinct_words": len(words),
        "speech_engines": {"mix": mix, "cuts": engine_cuts, "hours": r(engine_hours)},
        "held_out": {
            "voices": held_voices,
            "instruments": sorted(music.HELD_OUT_INSTRUMENTS),
            "voices_in_test": sorted(speakers["test"] & set(held_voices)),
            "instruments_in_test": sorted(instruments["test"] & set(music.HELD_OUT_INSTRUMENTS)),
        },
        "jobs": {"planned": len(plan), "made": len(records), "failed": len(failures)},
        "failures": dict(sorted(failures.items())),
        "generator": {"sentence_templates": len(T.TEMPLATES), "generator_vocabulary": len(T.vocabulary()),
                      "voices": len(V.ALL_VOICES), "event_classes": len(kinds.sounds.event_names()),
                      "instruments": len(music.ALL_INSTRUMENTS)},
    }
    write_json(out / "stats.json", stats)
    write_text(out / "README.md", _readme(stats, versions))
    return stats


def _readme(stats: dict, versions: dict) -> str:
    lines = [
        "# unisono built-in corpus",
        "",
        f"Made by `{stats['command']}`: speech ({', '.join(stats['speech_engines']['mix'])}), "
        "singing (espeak-ng + sox), music (FluidSynth with "
        f"{'MuseScore General' if stats['sound_font'] == 'musescore' else 'FluidR3'}), "
        f"{'procedural and recorded' if stats['real_sounds'] else 'procedural'} sound events and scenes, and degraded "
        "or paired versions for every task. Audio: 16 kHz mono FLAC. Layout and schema: `docs/corpus.md` of unisono.",
        "",
        "| split | cuts | hours (primary audio) | hours (all audio) | speakers |",
        "|---|---|---|---|---|",
    ]
    for s, v in stats["splits"].items():
        lines.append(f"| {s} | {v['cuts']} | {v['hours']:.4f} | {v['hours_all_audio']:.4f} | {stats['speakers'][s]} |")
    lines += ["", "| task | train h | valid h | test h | cuts |", "|---|---|---|---|---|"]
    for t, v in stats["hours_per_task"].items():
        lines.append(f"| {t} | {v['train']:.4f} | {v['valid']:.4f} | {v['test']:.4f} | "
                     f"{sum(stats['cuts_per_task'][t].values())} |")
    lines += ["", f"Held-out voices (test only): {', '.join(stats['held_out']['voices'])}.",
              f"Held-out instruments (test only): {', '.join(stats['held_out']['instruments'])}.",
              f"Jobs: {stats['jobs']['made']} made, {stats['jobs']['failed']} failed.", "", "Tools:", ""]
    lines += [f"- {k}: {v}" for k, v in sorted(versions.items())]
    return "\n".join(lines) + "\n"
