"""Setting up a training run of the language model: its config file, its data sources (token shards, or the
built-in toy tasks), the model's sizes from the shards' vocabulary, and the audio sampler that logs what the
model says as it learns. ``unisono train`` (:mod:`unisono.cli.train`) is this plus printing."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from unisono.codec import load_codec
from unisono.data.shards import FEATURES_FILE
from unisono.data.store import compute_features, load_store, open_examples, store_path
from unisono.errors import UnisonoError
from unisono.features import CODES_ENCODERS, build_encoder, check_encoder
from unisono.fileio import read_json
from unisono.inference import PreparedPrompt, TaskIO
from unisono.options import GenerationOptions
from unisono.tasks import example_features, load_templates
from unisono.train.data import split_by_task
from unisono.train.settings import read_settings_file
from unisono.train.toydata import PAD, toy_examples, toy_vocab_size
from unisono.train.trainer import Trainer
from unisono.vocab import Vocab


def load_recipe(path: str | Path) -> dict:
    """The ``model`` and ``train`` sections of a training config (one-line errors for anything else)."""
    path = Path(path)
    cfg = read_settings_file(path, "see configs/lm/ for recipes")
    unknown = sorted(set(cfg) - {"model", "train"})
    if unknown:
        raise UnisonoError(f"config {path}: unknown sections {unknown}; use `model` and `train`")
    return {"model": dict(cfg.get("model") or {}), "train": dict(cfg.get("train") or {})}


def model_dims_from_vocab(vocab_json: Path, feature_dim: int = 0) -> dict:
    """``vocab_size``, ``num_streams`` (codebooks) and ``pad_id`` of the shards' vocabulary, and for a model that
    reads audio features (``feature_dim`` > 0) ``feature_id``, its ``<audio_feat>`` placeholder."""
    v = Vocab.load(vocab_json)
    dims = {"vocab_size": int(v.size), "num_streams": int(v.num_codebooks), "pad_id": int(v.pad_id)}
    if feature_dim:
        dims["feature_id"] = v.placeholder_id("audio_feat")
    return dims


def shard_features(shards: Path) -> dict | None:
    """The feature encoder whose vectors the shards hold (``SHARDS/features.json``, written by ``unisono tokenize
    --feature-encoder``: its :meth:`~unisono.features.FeatureEncoder.describe`), or None."""
    path = Path(shards) / FEATURES_FILE
    return read_json(path)["encoder"] if path.is_file() else None


def feature_settings(mcfg: dict, shards: Path, val_shards: Path | None = None) -> None:
    """Set ``feature_dim`` and ``feature_encoder`` of the model config ``mcfg`` from the shards' features: when
    the recipe says ``feature_dim: auto``, or names no ``feature_dim`` and the shards hold features. A
    ``feature_dim`` or ``feature_encoder`` that disagrees with the shards, ``auto`` on shards without features, or
    validation shards of another encoder are one-line errors."""
    enc = shard_features(shards)
    want = mcfg.get("feature_dim")
    if want == "auto" and enc is None:
        raise UnisonoError(f"model.feature_dim is auto but {shards} holds no audio features (no {FEATURES_FILE}); "
                           "tokenize a task with audio_feat conditions with --feature-encoder NAME")
    if enc is None or want == 0:
        return
    if want not in (None, "auto") and want != enc["dim"]:
        raise UnisonoError(f"model config says feature_dim={want} but the features in {shards} have "
                           f"{enc['dim']} dims ({enc['fingerprint']}); use feature_dim: auto")
    if mcfg.get("feature_encoder") and mcfg["feature_encoder"].get("fingerprint") != enc["fingerprint"]:
        raise UnisonoError(f"model config names feature encoder {mcfg['feature_encoder'].get('fingerprint')} but "
                           f"{shards} holds features of {enc['fingerprint']}")
    val = shard_features(val_shards) if val_shards is not None else None
    if val is not None and val["fingerprint"] != enc["fingerprint"]:
        raise UnisonoError(f"the validation shards {val_shards} hold features of {val['fingerprint']}, the training "
                           f"shards of {enc['fingerprint']}; tokenize both with one encoder")
    mcfg["feature_dim"], mcfg["feature_encoder"] = int(enc["dim"]), enc


def store_features(shards: Path, val_shards: Path | None, tcfg: dict) -> dict | None:
    """When ``shards`` is a token store whose ``audio_feat`` segments read an encoder of the codes (``resynth``,
    :data:`unisono.features.CODES_ENCODERS`), compute their features now from the stored codes (train and
    validation stores) on the training device: the encoder ``features.json`` names, with the codec
    ``train.feature_codec`` (default: the one ``codec.json`` names) and the inner encoder's weights file
    ``train.feature_weights`` (default: the packaged model), checked against the stored fingerprint. Returns the
    counts per store, or None when there is nothing to compute."""
    desc = shard_features(shards)
    paths = [p for p in (store_path(shards), store_path(val_shards) if val_shards else None) if p is not None]
    if desc is None or not paths:
        return None
    if desc["name"] not in CODES_ENCODERS:
        raise UnisonoError(f"{shards} is a token store with features of {desc['fingerprint']}, which are not "
                           "computed from codes; tokenize it as shards")
    codec_dir = tcfg.get("feature_codec") or read_json(shards / "codec.json").get("source")
    if not codec_dir or not Path(codec_dir).is_dir():
        raise UnisonoError(f"the features of {shards} are computed with its codec, and {codec_dir} is not a directory: "
                           "give the codec with --set train.feature_codec=DIR")
    params = dict(desc.get("params") or {})
    if tcfg.get("feature_weights"):
        params["encoder_params"] = {**(params.get("encoder_params") or {}), "weights": str(tcfg["feature_weights"])}
    enc = build_encoder(desc["name"], load_codec(codec_dir).eval(), **params)
    check_encoder(desc, enc, what=f"the token store {shards}")
    want = str(tcfg.get("device") or "auto")
    enc.to("cuda" if want in ("auto", "cuda") and torch.cuda.is_available() else ("cpu" if want == "auto" else want))
    counts = {}
    for p in paths:  # a bar on a terminal: ~0.4 s a recording on 2 CPU cores (Whisper), a few ms on a GPU
        store = load_store(p)
        with tqdm(total=len(store.meta.get("feature_keys") or []), unit="rec", desc=f"features {p.parent.name}",
                  disable=None, file=sys.stderr) as bar:
            counts[str(p)] = compute_features(store, enc, progress=bar.update)
    return counts


def shard_sources(shards: str | Path, tasks: list[str] | None, rank: int, world_size: int) -> dict:
    """One restartable source per task over the examples read by this rank (all tasks as one source when
    ``tasks`` is None) of ``shards``: token shards, or a token store (assembled as read; :mod:`unisono.data.store`)."""
    if tasks:
        return {t: (lambda t=t: open_examples(shards, rank=rank, world_size=world_size, tasks=[t])) for t in tasks}
    return {"all": lambda: open_examples(shards, rank=rank, world_size=world_size, tasks=None)}


def audio_sampler(shards: Path, val_shards: Path | None, max_seconds: float = 4.0):
    """A ``sample_fn`` that continues the prompt of the first audio-target example of the validation (or
    training) shards with the model being trained, decodes it with the shards' codec and logs the audio
    (``samples/<task>``) to TensorBoard."""
    state: dict = {}

    def setup():
        src = read_json(shards / "codec.json").get("source") if (shards / "codec.json").exists() else None
        if not src:
            return False
        state["codec"] = load_codec(src).eval()
        vocab = state["vocab"] = Vocab.load(shards / "vocab.json")
        state["templates"] = load_templates()
        starts = {vocab.start_id("codec")}
        for ex in open_examples(val_shards or shards):
            col = ex["frames"][:, 0]
            loss_rows = ex["loss_mask"].any(dim=1).nonzero()
            if len(loss_rows) == 0:
                continue
            first = int(loss_rows[0])
            if first > 0 and int(col[first - 1]) in starts and ex["task"] in state["templates"]:  # audio target
                feats = example_features(vocab, ex)  # an audio_feat condition: its stored features go along
                state["example"] = (ex["task"], ex["frames"][:first], None if feats is None else feats[:first])
                return True
        return False

    def sample(model, step, writer):
        if "ok" not in state:
            state["ok"] = setup()
        if not state["ok"] or writer is None:
            return
        task, prompt, feats = state["example"]
        if "io" not in state:  # one TaskIO (a template with audio_feat conditions rebuilds the model's encoder)
            state["io"] = TaskIO(state["templates"][task], state["vocab"], None, state["codec"], model)
        io = state["io"]
        prep = PreparedPrompt(prompt, prompt, int(max_seconds * float(state["codec"].frame_rate)), 0, [], feats=feats)
        out = io.finish(io.sample([prep], GenerationOptions(top_k=30, seed=0))[0])
        if out.wav.size:
            writer.add_audio(f"samples/{task}", torch.from_numpy(out.wav).clamp(-1, 1)[None], step,
                             sample_rate=out.sample_rate)

    return sample


def make_trainer(config: str | Path, out: str | Path, shards: str | Path | None = None,
                 val_shards: str | Path | None = None, toy: bool = False, max_steps: int | None = None,
                 init_from: str | Path | None = None, overrides: dict | None = None) -> Trainer:
    """A :class:`Trainer` for the config file ``config`` on ``shards`` (model sizes from their vocab.json;
    each checkpoint carries their tokenizers and codec reference, so it loads in ``Pipeline``) or, with
    ``toy``, on the built-in synthetic tasks. ``overrides`` (``{"model": {...}, "train": {...}}``, e.g. from
    ``--set``) replace the config's values."""
    recipe = load_recipe(config)
    unknown = sorted(set(overrides or {}) - {"model", "train"})
    if unknown:
        raise UnisonoError(f"--set names sections {unknown}; use model.KEY=VALUE or train.KEY=VALUE")
    for section, values in (overrides or {}).items():
        recipe[section].update(values)
    mcfg, tcfg = recipe["model"], recipe["train"]
    if max_steps is not None:
        tcfg["max_steps"] = max_steps
    vocab_json = None
    weights = tcfg.get("task_weights") or None
    tasks = sorted(weights) if weights else None
    if toy:
        k = int(mcfg.setdefault("num_streams", 4))
        mcfg.setdefault("vocab_size", toy_vocab_size(k, 64))
        mcfg.setdefault("pad_id", PAD)
        cb = (mcfg["vocab_size"] - 4) // k
        train_src = split_by_task(toy_examples(256, k, cb, seed=0))
        val_src = split_by_task(toy_examples(32, k, cb, seed=1))
        if weights:
            tcfg["task_weights"] = {t: w for t, w in weights.items() if t in train_src}
        return Trainer(mcfg, tcfg, out, train_src, val_src, vocab_json=None, init_from=init_from)
    shards = Path(shards) if shards is not None else None
    if shards is None or not shards.is_dir():
        raise UnisonoError(f"--shards {shards} is not a directory; make shards with `unisono tokenize`")
    if (shards / "vocab.json").is_file():
        vocab_json = shards / "vocab.json"
        feature_settings(mcfg, shards, Path(val_shards) if val_shards else None)
        for key, val in model_dims_from_vocab(vocab_json, int(mcfg.get("feature_dim") or 0)).items():
            if key in mcfg and mcfg[key] != val:
                raise UnisonoError(f"model config says {key}={mcfg[key]} but {vocab_json} says {val}")
            mcfg[key] = val

    store_features(shards, Path(val_shards) if val_shards else None, tcfg)

    def train_src(r, w):
        return shard_sources(shards, tasks, r, w)

    def val_src(r, w):
        return shard_sources(val_shards, tasks, r, w)

    trainer = Trainer(mcfg, tcfg, out, train_src, val_src if val_shards else None, vocab_json=vocab_json,
                      init_from=init_from)
    if tcfg.get("sample_every"):
        trainer.sample_fn = audio_sampler(shards, Path(val_shards) if val_shards else None)
    trainer.checkpoint_extras = [p for p in (shards / "tokenizers", shards / "codec.json", shards / FEATURES_FILE)
                                 if p.exists()]
    return trainer
