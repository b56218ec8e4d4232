"""``unisono tokenize``: corpus manifests -> tokenizers, vocab.json and token shards for every task.

Steps: (1) fit the text tokenizers on the train split (phone inventory, BPE; k-means semantic units
when a task uses them) or reuse the ones already in ``OUT/tokenizers``; (2) build the vocabulary
(``OUT/vocab.json``); (3) plan the shards: per split and task, the task's cuts in id order cut into
groups of ``--shard-size`` (``OUT/plan.json``); (4) make the shards in parallel, each written
atomically; a cut whose audio or metadata is broken is skipped with its reason, the run goes on;
(5) write per-task counts (``OUT/stats.json``). Running the same command again resumes: finished
shards are kept, the rest are made.

With ``--format store`` (``store=True``) steps (3)-(4) make a token store instead (:mod:`unisono.data.storebuild`):
per split one file with each recording's codes once, packed, and the text token ids and cut metadata beside them,
from which the trainer assembles the same examples as it reads them (docs/tokens.md, "The token store").

Tasks with ``audio_feat`` conditions need ``--feature-encoder NAME`` (:mod:`unisono.features`): its features
are computed once per recording (cached under ``OUT/.feats`` as the codes under ``OUT/.codes``), stored in the
shards as float16, and the encoder is named in ``OUT/features.json`` (docs/features.md).
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import multiprocessing as mp
import os
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from unisono.audio import resample
from unisono.data import examples
from unisono.data.examples import recording_key
from unisono.data.own import english, load_split, load_splits
from unisono.data.shards import FEATURES_FILE, shard_metadata, shard_name, vocab_hash, write_shard
from unisono.data.sources import source_value
from unisono.data.store import check_no_mix, check_store_tasks
from unisono.encode import SegmentEncoder
from unisono.errors import UnisonoError
from unisono.features import (
    CODES_ENCODERS,
    ENCODERS,
    FeatureEncoder,
    build_encoder,
    default_encoder_name,
    encoder_from_config,
    parse_encoder_spec,
)
from unisono.fileio import atomic_path, read_json, write_json
from unisono.reasoning import Terms
from unisono.tasks import Segment, TaskTemplate, load_templates
from unisono.text.bpe import BPETokenizer
from unisono.text.g2p import phonemize
from unisono.text.phones import PhoneTokenizer
from unisono.text.tokenizers import TokenizerSet
from unisono.vocab import Vocab

SPEECH_KINDS = ("speech", "noisy", "reverb", "mixture", "vc_pair", "speech_edit")


log = logging.getLogger("unisono")


# ----------------------------------------------------------------------------------- codec
def _abs_or_none(path) -> str | None:
    return str(Path(path).resolve()) if isinstance(path, (str, os.PathLike)) else None


def load_codec_dir(codec_dir: str):
    """The codec in ``codec_dir`` (``unisono.codec.load_codec``), imported only when needed."""
    try:
        from unisono.codec import load_codec  # noqa: PLC0415 (the codec part is optional for tokenize)
    except ImportError as e:
        raise UnisonoError(f"unisono.codec is not available ({e}); install the codec part of unisono") from None
    return load_codec(codec_dir)


# ------------------------------------------------------------------------------- examples
MAX_SOURCE_SECONDS = 600.0  # a longer recording is skipped (it is encoded whole): split it into cuts first


def cut_audio(obj, sample_rate: int) -> torch.Tensor:
    """``wav [1, S]`` float32 at ``sample_rate`` Hz of a lhotse Cut or Recording (any rate: resampled)."""
    seconds = float(getattr(obj, "duration", 0.0) or 0.0)
    if seconds > MAX_SOURCE_SECONDS:
        raise UnisonoError(f"audio of {obj.id} is {seconds:.0f} s long, over the {MAX_SOURCE_SECONDS:g} s limit "
                           "of one source; split the recording into shorter cuts")
    try:
        x = obj.load_audio()
    except Exception as e:  # lhotse / soundfile raise assorted errors for unreadable files
        raise UnisonoError(
            f"cannot read audio of {obj.id}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() == 1:
        x = x[None]
    x = x.mean(0, keepdim=True)
    if x.shape[-1] == 0:
        raise UnisonoError(f"audio of {obj.id} is empty")
    if not torch.isfinite(x).all():
        raise UnisonoError(f"audio of {obj.id} holds NaN or Inf")
    sr = int(obj.sampling_rate)
    return resample(x, sr, sample_rate) if sr != sample_rate else x


class CorpusExampleMaker(examples.ExampleMaker):
    """The example assembler (:class:`unisono.data.examples.ExampleMaker`) on a corpus: Lhotse ``cuts`` of one split,
    their audio encoded by ``codec`` (each recording once: kept in memory and under ``cache_dir``), their text by
    the tokenizers ``toks``; ``features``: the frozen encoder of ``audio_feat`` segments (:mod:`unisono.features`;
    None: none made), its vectors cached under ``feats_dir``."""

    def __init__(self, templates: dict[str, TaskTemplate], vocab: Vocab, toks, codec, cuts, seed: int = 0,
                 cache_dir: str | os.PathLike | None = None, features: FeatureEncoder | None = None,
                 feats_dir: str | os.PathLike | None = None):
        super().__init__(templates, vocab, SegmentEncoder(vocab, toks, codec, features), cuts, seed)
        self.toks, self.codec, self.features = toks, codec, features
        self.cache_dirs = {"codes": None if cache_dir is None else Path(cache_dir),
                           "feats": None if feats_dir is None else Path(feats_dir)}
        self.encoded_seconds = 0.0  # audio passed to the codec, in seconds (cache hits excluded)
        self.featured_seconds = 0.0  # audio passed to the feature encoder, in seconds (cache hits excluded)
        # "codes" / "feats" -> {"Cut:id" / "Recording:id" (@HZ) -> the whole recording's codes [K, T] / feats [T, D]}
        self._memory: dict[str, dict] = {"codes": {}, "feats": {}}

    def recording(self, cut, role: str):
        rec = (cut.custom or {}).get(role)
        if rec is None or not hasattr(rec, "load_audio"):
            raise UnisonoError(f"cut {cut.id} has no condition recording {role!r}")
        return rec

    def _cached(self, store: str, key: str, make) -> torch.Tensor:
        """The tensor ``make()`` gives for ``key`` (its dtype is what is stored), made once: kept in memory (the
        last 64 recordings per store) and, when the store has a cache directory, on disk (``{sha1(key)}``
        .safetensors), so a recording serving several tasks, and the prompts cut from it, is encoded once per run
        (and once across resumed runs)."""
        memory, cdir = self._memory[store], self.cache_dirs[store]
        t = memory.get(key)
        path = None if cdir is None else cdir / (hashlib.sha1(key.encode()).hexdigest() + ".safetensors")
        if t is None and path is not None and path.exists():
            t = load_file(str(path))[store]
        if t is None:
            t = make()
            if path is not None:
                with atomic_path(path) as tmp:
                    save_file({store: t.contiguous()}, str(tmp))
        if len(memory) >= 64:
            memory.pop(next(iter(memory)))
        memory[key] = t
        return t

    def codes(self, obj, spec) -> torch.Tensor:
        """``codes [K, T]`` of a whole recording (band-limited as ``spec`` says), encoded once (:meth:`_cached`)."""
        def make():
            wav = cut_audio(obj, int(self.codec.sample_rate))
            self.encoded_seconds += wav.shape[-1] / float(self.codec.sample_rate)
            return self.encoder.codes(wav, spec.resample).to(torch.int32)

        return self._cached("codes", recording_key(obj, spec), make).long()

    def feats(self, obj, spec) -> torch.Tensor:
        """``feats float16 [T, D]`` of a whole recording (band-limited as ``spec`` says) at the codec's frame rate:
        the feature encoder's vectors, computed once (:meth:`_cached`; float16 as the shards store them)."""
        if self.features is None:
            raise UnisonoError(f"segment {spec.name} is audio_feat and no feature encoder is given "
                               "(unisono tokenize --feature-encoder NAME)")

        def make():
            wav = cut_audio(obj, int(self.codec.sample_rate))
            self.featured_seconds += wav.shape[-1] / float(self.codec.sample_rate)
            return self.encoder.audio_features(wav, spec.resample).half()

        return self._cached("feats", f"{recording_key(obj, spec)}|{self.features.fingerprint()}", make)

    def _value(self, spec, cut, variant):
        v = source_value(spec, cut, variant)
        sup = cut.supervisions[0] if cut.supervisions else None
        if v is None and spec.source_kind == "phones" and sup is not None and sup.text and not english(sup):
            raise UnisonoError(f"cut {cut.id}: its text is in {sup.language!r} and unisono's phones are English "
                               "(espeak-ng en-us)")
        if v is None or (isinstance(v, list) and not v) or (isinstance(v, str) and not v.strip()):
            raise UnisonoError(
                f"cut {cut.id} lacks {spec.source}" + (" (only spaces)" if isinstance(v, str) and v else "")
            )
        return v

    def span(self, spec, cut, variant: int):
        return self._value(spec, cut, variant)

    def semantic_segment(self, spec, cut, rng) -> Segment:
        sr = int(self.codec.sample_rate)
        wav = cut_audio(self.source(spec, cut, rng), sr)
        n = int(round(spec.seconds * sr)) if spec.seconds is not None else wav.shape[-1]
        return self.encoder.semantic_segment(spec, wav, self.window_start(wav.shape[-1], n, spec, rng))

    def text_segment(self, spec, cut, variant: int) -> Segment:
        value = self._value(spec, cut, variant)
        lyric = None
        if spec.modality == "midi":  # one note per word: the word's phones from the lyrics (same voice and accent)
            sup = cut.supervisions[0] if cut.supervisions else None
            lyric = (sup.custom or {}).get("phones") if sup is not None else None
        return self.encoder.text_segment(spec, value, lyric, f"cut {cut.id}")




# ---------------------------------------------------------------------------- tokenizers
def corpus_texts(cuts) -> tuple[list[str], list[str], list[str]]:
    """(phone strings, texts for BPE, singing syllables) of ``cuts``."""
    phones, texts, syllables = [], [], []
    for c in cuts:
        custom = c.custom or {}
        for s in c.supervisions:
            if s.text:
                texts.append(s.text)
            p = (s.custom or {}).get("phones")
            if p:
                phones.append(p)
        for key in ("caption", "instruction"):
            if isinstance(custom.get(key), str):
                texts.append(custom[key])
        for pair in custom.get("qa") or []:
            texts += [str(x) for x in pair]
        for n in (custom.get("params") or {}).get("notes") or []:
            if len(n) == 4:
                syllables.append(str(n[3]))
    return phones, texts, syllables


def plan_texts(cuts, templates, selected) -> list[str]:
    """The plans (``plan.KIND`` sources) the selected templates write from ``cuts``, for fitting the BPE."""
    out = []
    for t in selected:
        tpl = templates[t]
        specs = [s for s in tpl.segments if s.source_kind == "plan"]
        for c in cuts if specs else ():
            if tpl.serves(c.custom):
                out += [v for v in (source_value(s, c) for s in specs) if v]
    return out


def fit_tokenizers(train_cuts, templates, selected, codec, bpe_size: int = 2000, semantic_units: int = 500,
                   semantic_features: str = "auto", hubert_dir: str | None = None, semantic_cuts: int = 200,
                   text_encoder: str | None = None, seed: int = 0):
    phones, texts, syllables = corpus_texts(train_cuts)
    texts += plan_texts(train_cuts, templates, selected)
    syl_phones = phonemize(sorted(set(syllables))) if syllables else []
    phone_tok = PhoneTokenizer.fit(phones + syl_phones)
    bpe = BPETokenizer.train(texts, vocab_size=bpe_size)
    semantic = text_emb = None
    if any("semantic" in templates[t].modalities for t in selected):
        # needs transformers (HuBERT) when used
        from unisono.text.semantic import FeatureExtractor, SemanticTokenizer  # noqa: PLC0415

        source = semantic_features
        if source == "auto":
            source = "hubert" if hubert_dir else ("codec" if callable(getattr(codec, "encoder", None)) else "mel")
        feats = FeatureExtractor(source, hubert_dir, frame_rate=float(codec.frame_rate), codec=codec)
        pool = sorted((c for c in train_cuts if (c.custom or {}).get("kind") in SPEECH_KINDS), key=lambda c: c.id)
        random.Random(seed).shuffle(pool)
        wavs = []
        for c in pool[:semantic_cuts]:
            try:
                wavs.append((cut_audio(c, feats.sample_rate), feats.sample_rate))
            except UnisonoError:
                continue
        semantic = SemanticTokenizer.fit(wavs, feats, num_units=semantic_units, seed=seed)
    if any("text_emb" in templates[t].modalities for t in selected):
        if not text_encoder:
            raise UnisonoError("a selected task uses text_emb; pass --text-encoder DIR (or 'package')")
        from unisono.text.embed import TextEmbedder  # noqa: PLC0415 (needs transformers when used)

        text_emb = TextEmbedder(text_encoder)
    return TokenizerSet(phone_tok, bpe, semantic, text_emb, Terms.from_cuts(train_cuts))


# ---------------------------------------------------------------------------------- planning
def plan_shards(cuts_by_split: dict, templates, selected, shard_size: int) -> list[dict]:
    """Shards to make: ``[{"split", "task", "index", "items": [[cut_id, variant], ...]}]`` in a fixed order."""
    plan = []
    for split in sorted(cuts_by_split):
        cuts = sorted(cuts_by_split[split], key=lambda c: c.id)
        for task in sorted(selected):
            tpl = templates[task]
            items = []
            for c in cuts:
                if not tpl.serves(c.custom):
                    continue
                if tpl.expand == "qa":
                    items += [[c.id, j] for j in range(len((c.custom or {}).get("qa") or []))]
                else:
                    items.append([c.id, 0])
            for i in range(0, len(items), shard_size):
                plan.append(
                    {"split": split, "task": task, "index": i // shard_size, "items": items[i : i + shard_size]}
                )
    return plan


# ----------------------------------------------------------------------------------- workers
_STATE: dict = {}


def worker_init(cfg: dict) -> None:
    """A tokenize worker's start (also this process's, with one worker): one thread, ``cfg`` kept for
    :func:`worker_maker`."""
    torch.set_num_threads(1)
    _STATE.clear()
    _STATE["cfg"] = cfg


def worker_maker(split: str, maker_class: type[CorpusExampleMaker] = CorpusExampleMaker) -> CorpusExampleMaker:
    """This worker's ``maker_class`` on ``split`` of ``cfg["data"]``, made once (the codec, the feature encoder
    that features.json names, tokenizers, vocab, templates and cuts loaded once per worker)."""
    key = (maker_class.__name__, split)
    if key not in _STATE:
        cfg = _STATE["cfg"]
        if "codec" not in _STATE:
            _STATE["codec"] = cfg["codec_factory"]()
        codec = _STATE["codec"]
        if cfg.get("features") and "features" not in _STATE:  # the encoder features.json names, rebuilt and checked
            _STATE["features"] = encoder_from_config(cfg["features"], codec)
        toks = TokenizerSet.load(Path(cfg["out"]) / "tokenizers", codec=codec)
        vocab = Vocab.load(Path(cfg["out"]) / "vocab.json")
        templates = load_templates(cfg["templates"])
        cuts = load_split(cfg["data"], split, templates)
        _STATE[key] = maker_class(templates, vocab, toks, codec, cuts, cfg["seed"],
                                  cache_dir=Path(cfg["out"]) / ".codes" / split,
                                  features=_STATE.get("features"), feats_dir=Path(cfg["out"]) / ".feats" / split)
    return _STATE[key]


def make_shard(job: dict) -> dict:
    """Make one shard (in a worker): returns counts and skipped items."""
    maker = worker_maker(job["split"])
    enc0, feat0 = maker.encoded_seconds, maker.featured_seconds
    examples, skipped = [], []
    frames = 0
    seconds = 0.0
    for cut_id, variant in job["items"]:
        try:
            ex = maker.make(job["task"], cut_id, variant)
        except UnisonoError as e:
            skipped.append([cut_id, str(e)])
            continue
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, OSError) as e:
            skipped.append([cut_id, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"])
            continue
        examples.append(ex)
        frames += int(ex["frames"].shape[0])
        seconds += float(maker.cuts[cut_id].duration)
    path = Path(_STATE["cfg"]["out"]) / job["split"] / shard_name(job["task"], job["index"])
    write_shard(path, examples, maker.vocab, skipped)
    return {"n": len(examples), "skipped": skipped, "frames": frames, "seconds": seconds, "items": len(job["items"]),
            "cuts": sorted({cid for cid, _ in job["items"]}), "encoded_seconds": maker.encoded_seconds - enc0,
            "featured_seconds": maker.featured_seconds - feat0}


# --------------------------------------------------------------------------------------- run
def _plan_hash(plan, vocab: Vocab) -> str:
    blob = json.dumps([vocab_hash(vocab), plan], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _clean_stale_tmp(out: Path, jobs: list[dict]) -> int:
    """Delete temporary files left by an interrupted run, for this rank's shards only."""
    n = 0
    for j in jobs:
        for p in (out / j["split"]).glob(f".{shard_name(j['task'], j['index'])}.*"):
            if p.is_file():
                p.unlink()
                n += 1
    return n


@dataclass(frozen=True)
class VocabSettings:
    """How rank 0 makes the tokenizers and the vocabulary (the ``unisono tokenize`` options of the same names)."""

    fill: str = "pad"
    vocab_path: str | None = None
    tokenizers_dir: str | None = None
    num_codebooks: int | None = None
    bpe_size: int = 2000
    semantic_units: int = 500
    semantic_features: str = "auto"
    hubert_dir: str | None = None
    text_encoder: str | None = None
    seed: int = 0


def _load_tokenizers(tokenizers_dir: str, codec) -> TokenizerSet:
    tdir = Path(tokenizers_dir)
    if not (tdir / "phones.json").exists() and (tdir / "tokenizers" / "phones.json").exists():
        tdir = tdir / "tokenizers"  # a checkpoint or shards directory: its tokenizers/ inside
    return TokenizerSet.load(tdir, codec=codec)


def _vocab_for(toks: TokenizerSet, templates, selected, K: int, codec, vs: VocabSettings) -> Vocab:
    """A new vocabulary, or with ``--vocab`` the given layout (e.g. a checkpoint's): same ranges and tokenizers
    required; the selected tasks it lacks take free task slots (in name order), every existing id stays."""
    if not vs.vocab_path:
        return Vocab.build(sorted(templates), K, codec.codebook_size, fill=vs.fill,
                           fingerprints=toks.fingerprints(), **toks.sizes())
    base = Vocab.load(vs.vocab_path)
    mine = Vocab(toks.sizes(), K, codec.codebook_size, base.tasks, base.fill, toks.fingerprints())
    base.check_compatible(mine, what="the tokenizers and codec of this run", mine=str(vs.vocab_path))
    for t in selected:
        base = base.with_task(t)
    return base


def _write_vocab(out: Path, data, codec_factory, cuts_by_split: dict, templates, selected, splits,
                 vs: VocabSettings) -> None:
    """Rank 0's first step: fit (or load) the tokenizers, build the vocabulary, write them and codec.json."""
    codec = codec_factory()
    # with --vocab, the number of codebooks defaults to the given vocabulary's (a checkpoint's)
    K = int(vs.num_codebooks or (Vocab.load(vs.vocab_path).num_codebooks if vs.vocab_path else codec.num_codebooks))
    if not 1 <= K <= int(codec.num_codebooks):
        raise UnisonoError(f"--num-codebooks must lie in 1..{codec.num_codebooks} (the codec's codebooks), got {K}")
    if vs.tokenizers_dir:
        toks = _load_tokenizers(vs.tokenizers_dir, codec)
    else:
        train_cuts = cuts_by_split["train"] if "train" in cuts_by_split else load_split(data, "train", templates)
        if not train_cuts:
            raise UnisonoError("fitting the tokenizers needs a train split: give one (--data train=PATH) or reuse "
                               "tokenizers with --tokenizers")
        toks = fit_tokenizers(train_cuts, templates, selected, codec, vs.bpe_size, vs.semantic_units,
                              vs.semantic_features, vs.hubert_dir, text_encoder=vs.text_encoder, seed=vs.seed)
    vocab = _vocab_for(toks, templates, selected, K, codec, vs)
    toks.save(out / "tokenizers")
    write_json(out / "codec.json", {"sample_rate": int(codec.sample_rate), "frame_rate": float(codec.frame_rate),
                                    "num_codebooks": int(codec.num_codebooks), "codebooks_used": K,
                                    "codebook_size": int(codec.codebook_size),
                                    "source": _abs_or_none(getattr(codec_factory, "args", [None])[0])})
    for s in splits:
        vocab.save(out / s / "vocab.json")
    vocab.save(out / "vocab.json")  # written last: its presence means the tokenizers are complete


def _feature_setup(out: Path, spec: str | None, feature_tasks: list[str], codec_factory, write: bool) -> dict | None:
    """The description (:meth:`FeatureEncoder.describe`) of the encoder whose features this run stores, or None
    when no selected task reads them. Rank 0 (``write``) records it in ``OUT/features.json`` on the first run;
    a later run (or another rank) must ask for the same encoder (same fingerprint)."""
    path = out / FEATURES_FILE
    if not feature_tasks:
        if spec:
            log.info(f"unisono tokenize: no selected task reads audio_feat; --feature-encoder {spec} is not used")
        return None
    name, params = parse_encoder_spec(spec)
    enc = build_encoder(name, codec_factory(), **params)
    if path.exists():
        stored = read_json(path)["encoder"]
        if stored.get("fingerprint") != enc.fingerprint():
            raise UnisonoError(f"{out} holds features of {stored.get('fingerprint')}, not {enc.fingerprint()} "
                               f"(--feature-encoder {spec}); use a new --out or the same encoder")
        return stored
    if not write:
        raise UnisonoError(f"{path} is missing; rank 0 writes it (start rank 0 too)")
    desc = enc.describe()
    write_json(path, {"encoder": desc, "stored_dtype": "float16", "tasks": feature_tasks})
    return desc


def data_list(data) -> list[str]:
    """``data`` (one source or several, see :mod:`unisono.data.own`) as a list of strings (for the workers)."""
    return [str(data)] if isinstance(data, (str, os.PathLike)) else [str(d) for d in data]


def _load_splits(data, splits, templates) -> dict[str, list]:
    """The cuts of each split that the sources have (one-line notes for the others); a clear error for none."""
    out = {s: cuts for s, cuts in load_splits(data, splits, templates).items() if cuts}
    for s in splits:
        if s not in out:
            log.info(f"unisono tokenize: no {s} split in {', '.join(data_list(data))}; left out")
    if not out:
        raise UnisonoError(f"no cuts in splits {', '.join(splits)} of {', '.join(data_list(data))}")
    return out


def _wait_for_vocab(out: Path, rank: int, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while not (out / "vocab.json").exists():
        if time.monotonic() > deadline:
            raise UnisonoError(f"rank {rank}: {out / 'vocab.json'} did not appear; start rank 0 too")
        time.sleep(2.0)


def _check_vocab(out: Path, vocab: Vocab, templates, selected, splits) -> None:
    for s in splits:
        if not (out / s / "vocab.json").exists():
            vocab.save(out / s / "vocab.json")
    missing = [t for t in selected if t not in vocab.tasks]
    if missing:
        raise UnisonoError(f"tasks {missing} are not in {out / 'vocab.json'}; tokenize into a new --out")
    if (
        any("semantic" in templates[t].modalities for t in selected)
        and not (out / "tokenizers" / "semantic.json").exists()
    ):
        raise UnisonoError(f"{out} was tokenized without semantic units; tokenize vc into a new --out")


def _record_plan(out: Path, plan: list[dict], vocab: Vocab, selected, splits, rank: int, world_size: int) -> None:
    """One plan file per split, so splits can be tokenized by separate runs into one directory; a run whose
    plan for a split differs from the recorded one (other corpus, tasks or options) is refused."""
    for split in splits:
        part = [j for j in plan if j["split"] == split]
        plan_file = out / (f"plan.{split}.json" if world_size == 1 else f"plan.{split}.rank{rank}.json")
        h = _plan_hash(part, vocab)
        if not plan_file.exists():
            write_json(plan_file, {"hash": h, "shards": len(part), "tasks": selected})
        elif read_json(plan_file).get("hash") != h:
            raise UnisonoError(f"{out / split} holds shards of another run (other corpus, tasks or options); "
                               "use a new --out or delete it")


def run_jobs(fn, todo: list[dict], cfg: dict, jobs: int, bar) -> list[dict]:
    """``fn(job)`` (a module-level function that uses :func:`worker_maker`) for each job of ``todo``, in this
    process (``jobs`` <= 1) or in ``jobs`` spawned workers; ``bar`` advances by each job's items."""
    results = []
    if jobs <= 1 or len(todo) <= 1:
        worker_init(cfg)
        try:
            for j in todo:
                results.append(fn(j))
                bar.update(len(j["items"]))
        finally:
            _STATE.clear()
        return results
    with cf.ProcessPoolExecutor(min(jobs, len(todo)), mp_context=mp.get_context("spawn"),
                                initializer=worker_init, initargs=(cfg,)) as pool:
        futures = {pool.submit(fn, j): j for j in todo}
        try:
            for f in cf.as_completed(futures):
                results.append(f.result())
                bar.update(len(futures[f]["items"]))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


def _shard_counts(out: Path, jobs: list[dict]) -> tuple[dict, list]:
    """Examples and skipped items per ``split/task`` from every complete shard of ``jobs``."""
    per_task: dict = defaultdict(Counter)
    skipped_all = []
    for j in jobs:
        p = out / j["split"] / shard_name(j["task"], j["index"])
        if not p.exists():
            continue
        meta = shard_metadata(p)
        per_task[f"{j['split']}/{j['task']}"]["examples"] += len(meta["ids"])
        per_task[f"{j['split']}/{j['task']}"]["skipped"] += len(meta["skipped"])
        skipped_all += [[j["split"], j["task"], cid, why] for cid, why in meta["skipped"]]
    return {k: dict(v) for k, v in sorted(per_task.items())}, skipped_all


def _check_request(templates: dict, selected: list[str], rank: int, world_size: int, feature_encoder: str | None,
                   store: bool) -> list[str]:
    """One-line errors, before any work, for a request tokenize cannot do; returns the tasks with audio_feat
    conditions."""
    unknown = [t for t in selected if t not in templates]
    if unknown:
        raise UnisonoError(f"unknown task(s) {unknown}; known: {', '.join(sorted(templates))}")
    if not 0 <= rank < world_size:
        raise UnisonoError(f"--rank must lie in 0..{world_size - 1}")
    if store and world_size > 1:
        raise UnisonoError("--format store runs as one process (use --jobs for workers), not with --world-size")
    feature_tasks = [t for t in selected if "audio_feat" in templates[t].modalities]
    name = parse_encoder_spec(feature_encoder)[0] if feature_encoder else None  # a bad spec: refused before work
    if store:
        check_store_tasks(templates, selected, codes_features=name in CODES_ENCODERS)
    if feature_tasks and not feature_encoder:
        raise UnisonoError(f"task(s) {', '.join(feature_tasks)} read audio_feat conditions; pass --feature-encoder "
                           f"NAME ({', '.join(sorted(ENCODERS))}, or auto: {default_encoder_name()} here)")
    return feature_tasks


def tokenize_corpus(
    data: str | os.PathLike,
    out: str | os.PathLike,
    codec_factory,
    tasks: list[str] | None = None,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    jobs: int = 1,
    shard_size: int = 256,
    rank: int = 0,
    world_size: int = 1,
    templates_paths: list[str] | None = None,
    fill: str = "pad",
    vocab_path: str | None = None,
    tokenizers_dir: str | None = None,
    num_codebooks: int | None = None,
    bpe_size: int = 2000,
    semantic_units: int = 500,
    semantic_features: str = "auto",
    hubert_dir: str | None = None,
    text_encoder: str | None = None,
    seed: int = 0,
    progress: bool = True,
    wait_s: float = 3600.0,
    feature_encoder: str | None = None,
    store: bool = False,
) -> dict:
    """Tokenize the corpus ``data`` into ``out`` (see the module doc); returns the run's statistics.
    ``feature_encoder``: ``NAME[:KEY=VALUE,...]`` (:func:`unisono.features.parse_encoder_spec`), the frozen
    encoder of the selected tasks' ``audio_feat`` conditions (needed when they have some). ``store``: write a token
    store (:mod:`unisono.data.store`, made by :mod:`unisono.data.storebuild`) instead of shards."""
    settings = VocabSettings(fill, vocab_path, tokenizers_dir, num_codebooks, bpe_size, semantic_units,
                             semantic_features, hubert_dir, text_encoder, seed)
    out = Path(out)
    templates = load_templates(templates_paths)
    selected = sorted(tasks) if tasks else sorted(templates)
    feature_tasks = _check_request(templates, selected, rank, world_size, feature_encoder, store)
    cuts_by_split = _load_splits(data, splits, templates)
    splits = tuple(s for s in splits if s in cuts_by_split)
    check_no_mix(out, splits, store)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if rank > 0:
        _wait_for_vocab(out, rank, wait_s)
    features = _feature_setup(out, feature_encoder, feature_tasks, codec_factory, write=rank == 0)
    if rank == 0 and not (out / "vocab.json").exists():
        _write_vocab(out, data, codec_factory, cuts_by_split, templates, selected, splits, settings)
    vocab = Vocab.load(out / "vocab.json")
    _check_vocab(out, vocab, templates, selected, splits)
    cfg = {"out": str(out), "data": data_list(data), "codec_factory": codec_factory, "templates": templates_paths,
           "seed": settings.seed, "features": features}
    if store:
        from unisono.data.storebuild import build_stores  # noqa: PLC0415 (storebuild builds on this module)

        stats = build_stores(out, cuts_by_split, templates, selected, cfg, jobs, progress)
        write_json(out / "stats.json", stats)
        return stats
    plan = plan_shards(cuts_by_split, templates, selected, shard_size)
    _record_plan(out, plan, vocab, selected, splits, rank, world_size)
    mine = [job for i, job in enumerate(plan) if i % world_size == rank]
    _clean_stale_tmp(out, mine)
    todo = [j for j in mine if not (out / j["split"] / shard_name(j["task"], j["index"])).exists()]
    bar = tqdm(total=sum(len(j["items"]) for j in todo), unit="item", disable=not progress,
               desc=f"tokenize{'' if world_size == 1 else f' rank {rank}'}", file=sys.stderr)
    t1 = time.perf_counter()
    results = run_jobs(make_shard, todo, cfg, jobs, bar)
    bar.close()
    elapsed = time.perf_counter() - t1
    # statistics from every complete shard of this run's plan (this rank's, or all with one rank)
    per_task, skipped_all = _shard_counts(out, plan if world_size == 1 else mine)
    stats = {
        "rank": rank,
        "world_size": world_size,
        "vocab_size": vocab.size,
        "shards_total": len(mine),
        "shards_made_now": len(todo),
        "shards_done_before": len(mine) - len(todo),
        "examples_made_now": sum(r["n"] for r in results),
        "audio_seconds_now": round(sum(r["seconds"] for r in results), 2),
        "encoded_seconds_now": round(sum(r["encoded_seconds"] for r in results), 2),
        "feature_seconds_now": round(sum(r["featured_seconds"] for r in results), 2),
        "distinct_cuts_now": len({c for r in results for c in r["cuts"]}),
        "tokenize_seconds_now": round(elapsed, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
        "per_task": per_task,
        "skipped": skipped_all,
    }
    write_json(out / ("stats.json" if world_size == 1 else f"stats.rank{rank}.json"), stats)
    if world_size == 1 and not sum(c.get("examples", 0) for c in per_task.values()):
        reasons = "; ".join(f"{n} x {why} (e.g. {cid})" for why, n, cid in skip_summary(skipped_all)[:3])
        raise UnisonoError(f"no example was made ({len(skipped_all)} skipped: {reasons or 'no cut serves the tasks'}); "
                           f"see {out / 'stats.json'}")
    return stats


def skip_summary(skipped: list) -> list[tuple[str, int, str]]:
    """``(reason, count, an example cut id)`` of skipped items ``[split, task, cut_id, why]``, most common first;
    the reasons are grouped with their cut ids taken out."""
    groups: dict[str, list] = {}
    for _split, task, cid, why in skipped:
        groups.setdefault(f"{task}: {str(why).replace(str(cid), '<cut>')[:200]}", []).append(cid)
    return sorted(((why, len(ids), ids[0]) for why, ids in groups.items()), key=lambda r: (-r[1], r[0]))
