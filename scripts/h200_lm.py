"""The steps of the language model's GPU run (scripts/h200_lm.sh; docs/lm.md, "Training on a lent H200").

    python scripts/h200_lm.py smoke CONFIG SHARDS --work DIR [--device cuda] [--set K=V ...]
        a few steps, a checkpoint written, read back (the same weights) and resumed for one more step
    python scripts/h200_lm.py export RUN OUT --shards SHARDS [--val-shards VAL] [--device cuda]
        the run's last weights into OUT as model.safetensors.00, .01, ... (float16, or int8 + scales when float16
        would pass --max-mib; each part <= --part-mib), their validation loss per task (the stored weights),
        result.json (configs, vocabulary, throughput, MFU, validation), log.jsonl and loss.png (with matplotlib)
    python scripts/h200_lm.py features-pack PACK
        here, for a token store whose audio_feat segments read features of the codes (resynth of whisper_torch):
        the Whisper encoder's weights exported into PACK/whisper.safetensors (the precision the encoder names) and
        PACK/features.sets, the --set values that make training compute the features there from the stored codes
        with those weights and the store's codec (when git does not track it, e.g. a codec trained under runs/,
        copied as it is into PACK/codec: store it int8 first, ~7 MB), and read the feature tasks (--config's task
        weights, each feature task at its cuts_from task's weight) (h200_lm.sh reads it)
    python scripts/h200_lm.py add OUT/result.json KEY FILE.json
        FILE's object under KEY of result.json (the generation-speed row)
    python scripts/h200_lm.py join OUT LM_DIR [--shards SHARDS --checkpoint CKPT]
        back here: the parts checked (sha256) and joined into LM_DIR (config.json, model.safetensors, vocab.json);
        with --shards and --checkpoint also packaged into a checkpoint (Pipeline.package) that `unisono eval` scores

Runs on the GPU image (no soundfile, soxr or lhotse). A one-line error (exit 2) for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from unisono.checkpoint import copy_codec  # noqa: E402
from unisono.data.shards import resolve_split_dir  # noqa: E402
from unisono.data.store import tasks_in  # noqa: E402
from unisono.errors import UnisonoError  # noqa: E402
from unisono.fileio import read_json, write_json  # noqa: E402
from unisono.lm import LMConfig, UnisonoLM  # noqa: E402
from unisono.train.launch import make_trainer, shard_sources, store_features  # noqa: E402
from unisono.train.loop import validation_loss  # noqa: E402
from unisono.train.settings import parse_sets  # noqa: E402
from unisono.weights import PRECISIONS, load_weights, read_metadata, save_weights  # noqa: E402

MIB = 2**20
PART_PREFIX = "model.safetensors."


def smoke(config: str, shards: str, work: str, device: str, steps: int, sets: list[str]) -> dict:
    """``steps`` updates eagerly (no compile: seconds, not a minute), a checkpoint written at the end, its weights
    read back equal, then the run resumed from it for one more update. Raises on any failure."""
    t0 = time.perf_counter()
    over = parse_sets(sets)
    train = over.setdefault("train", {})
    pool = min(256, int(train.get("pool_size", 256)))  # fewer examples read before the first step
    train.update(max_steps=steps, save_every=0, eval_every=0, log_every=1, compile=False, tensorboard=False,
                 device=device, max_seconds=0, sample_every=0, pool_size=pool)
    shutil.rmtree(work, ignore_errors=True)
    tr = make_trainer(config, work, shards=shards, overrides=over)
    ended = tr.train(progress=False)
    if tr.step != steps or not torch.isfinite(torch.tensor(ended["loss"])):
        raise UnisonoError(f"smoke: {tr.step} of {steps} updates, last loss {ended.get('loss')}")
    back = UnisonoLM.from_pretrained(tr.latest_checkpoint())
    for name, v in tr.model.state_dict().items():
        if not torch.equal(v.cpu(), back.state_dict()[name]):
            raise UnisonoError(f"smoke: {name} read back from the checkpoint differs from the trained weights")
    over["train"]["max_steps"] = steps + 1
    again = make_trainer(config, work, shards=shards, overrides=over)
    last = again.train(progress=False)
    if again.step != steps + 1:
        raise UnisonoError(f"smoke: the resumed run ended at update {again.step}, not {steps + 1}")
    mem = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() and device != "cpu" else 0.0
    out = {"seconds": time.perf_counter() - t0, "device": str(tr.device), "parameters": tr.model.num_parameters(),
           "loss": ended["loss"], "loss_resumed": last["loss"], "tokens_per_s": last["tokens_per_s"],
           "peak_gib": mem}
    print("smoke: ok (" + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items())
          + f"; {steps} updates, checkpoint written, read back equal, resumed for one more)")
    return out


def choose_precision(state: dict, precision: str, max_mib: float) -> str:
    """``precision``, or for ``auto`` float16 when the float16 weights fit ``max_mib``, else int8 (+ scales)."""
    if precision != "auto":
        if precision not in PRECISIONS:
            raise UnisonoError(f"--precision must be auto or one of {', '.join(PRECISIONS)}, not {precision!r}")
        return precision
    half = sum(v.numel() * (2 if v.is_floating_point() else v.element_size()) for v in state.values())
    return "float16" if half <= max_mib * MIB else "int8"


def split_file(path: Path, out: Path, part_bytes: int) -> list[dict]:
    """``path`` cut into ``out/model.safetensors.00``, ``.01``, ... of at most ``part_bytes`` each."""
    data = path.read_bytes()
    parts = []
    for i in range(0, max(1, -(-len(data) // part_bytes))):
        chunk = data[i * part_bytes:(i + 1) * part_bytes]
        name = f"{PART_PREFIX}{i:02d}"
        (out / name).write_bytes(chunk)
        parts.append({"file": name, "bytes": len(chunk)})
    return parts


def validate(model: UnisonoLM, source: Path, tasks: list[str] | None, train_cfg: dict, device: str) -> dict:
    """Mean token cross-entropy per task of ``model`` on the shard directory ``source`` (``tasks``: these only)."""
    split = resolve_split_dir(source)  # a split directory, or a tokenized root's train/
    have = tasks_in(split)  # shards or a token store
    tasks = [t for t in have if tasks is None or t in tasks]
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.startswith("cuda") else None
    return validation_loss(model, shard_sources(split, tasks, 0, 1), model.cfg.pad_id, int(train_cfg["max_frames"]),
                           int(train_cfg["eval_batches"]), device, autocast=autocast,
                           num_streams=model.cfg.num_streams, feature_id=model.cfg.feature_id)


def export(run: str, out: str, shards: str, val_shards: str | None, device: str, precision: str, max_mib: float,
           part_mib: float) -> dict:
    """See the module doc; returns result.json's contents."""
    run_dir, out_dir = Path(run), Path(out)
    if not (run_dir / "latest.json").is_file():
        raise UnisonoError(f"{run_dir} holds no finished checkpoint (latest.json): did training stop early?")
    ck = run_dir / read_json(run_dir / "latest.json")["path"]
    out_dir.mkdir(parents=True, exist_ok=True)
    state = load_weights(ck / "model.safetensors")
    chosen = choose_precision(state, precision, max_mib)
    with tempfile.TemporaryDirectory() as tmp:
        stored = Path(tmp) / "model.safetensors"
        save_weights(state, stored, chosen, read_metadata(ck / "model.safetensors"))
        size = stored.stat().st_size
        if size > max_mib * MIB:
            raise UnisonoError(f"the {chosen} weights take {size / MIB:.1f} MiB, more than --max-mib {max_mib}: "
                               "use a smaller model or --precision int8")
        digest = hashlib.sha256(stored.read_bytes()).hexdigest()
        parts = split_file(stored, out_dir, int(part_mib * MIB))
        model = UnisonoLM.from_config(LMConfig.from_dict(read_json(ck / "config.json")))
        model.load_state_dict(load_weights(stored))
    train = read_json(run_dir / "train_config.json")["train"]
    weights = train.get("task_weights")
    model.to(device)
    store_features(Path(shards), Path(val_shards) if val_shards else None, train)  # a store of resynth features
    val = validate(model, Path(val_shards or shards), sorted(weights) if weights else None, train, device)
    rows = [json.loads(r) for r in (run_dir / "log.jsonl").read_text().splitlines() if r.strip()]
    result = {"step": int(read_json(run_dir / "latest.json")["step"]), "model_config": read_json(ck / "config.json"),
              "train_config": train, "vocab": read_json(ck / "vocab.json") if (ck / "vocab.json").is_file() else None,
              "throughput": read_json(run_dir / "throughput.json") if (run_dir / "throughput.json").is_file() else None,
              "weights": {"precision": chosen, "bytes": size, "sha256": digest, "parts": parts,
                          "parameters": model.num_parameters()},
              "val_loss": val, "val_source": "valid shards" if val_shards else "training shards (no valid split)",
              "last_log_row": rows[-1] if rows else None}
    write_json(out_dir / "result.json", result)
    shutil.copy2(run_dir / "log.jsonl", out_dir / "log.jsonl")
    plotted = plot(rows, out_dir / "loss.png")
    tp = (result["throughput"] or {}).get("all", {})
    print(f"export: step {result['step']}, {chosen} weights {size / MIB:.1f} MiB in {len(parts)} file(s); "
          f"tokens/s {tp.get('tokens_per_s', 0):,.0f}, MFU {tp.get('mfu')}; validation loss "
          + ", ".join(f"{k} {v:.3f}" for k, v in val.items()) + ("" if plotted else "; no matplotlib: no loss.png"))
    return result


def plot(rows: list[dict], path: Path) -> bool:
    """The loss curve (training loss, validation loss per task) and MFU per logged step as a PNG; False when
    matplotlib is not installed."""
    try:
        import matplotlib  # noqa: PLC0415 (optional: the loss curve's picture)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415 (optional, as above)
    except ImportError:
        return False
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 3.6))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train", color="k")
    for task in sorted({k for r in rows for k in r if k.startswith("val_loss/")}):
        pts = [(r["step"], r[task]) for r in rows if task in r]
        ax.plot(*zip(*pts), marker=".", label=task.removeprefix("val_loss/"))
    ax.set(xlabel="step", ylabel="nats per token", title="loss")
    ax.legend(fontsize=6, ncol=2)
    key = "mfu" if any("mfu" in r for r in rows) else "tokens_per_s"
    ax2.plot([r["step"] for r in rows], [r.get(key, float("nan")) for r in rows])
    ax2.set(xlabel="step", title=key)
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def feature_task_weights(pack: Path, config: Path) -> dict:
    """The config's task weights with every feature task of the store added at the weight of the task whose cuts it
    reads (``cuts_from``: asr_feat as asr), so that training reads them (only weighted tasks are read)."""
    from unisono.data.store import load_store, store_path  # noqa: PLC0415
    from unisono.train.launch import load_recipe  # noqa: PLC0415

    weights = dict(load_recipe(config)["train"].get("task_weights") or {})
    meta = load_store(store_path(pack)).meta
    for task, tpl in sorted(meta["templates"].items()):
        if task not in weights and any(c.get("modality") == "audio_feat" for c in tpl.get("conditions", [])):
            weights[task] = float(weights.get(tpl.get("cuts_from") or task, 1.0))
    return weights


def _tracked(path: Path, root: Path) -> bool:
    """Whether git tracks ``path`` in the repository ``root`` (what travels with the working tree)."""
    if not path.is_relative_to(root):
        return False
    run = subprocess.run(["git", "ls-files", "--error-unmatch", str(path.relative_to(root))], cwd=root,
                         capture_output=True)
    return run.returncode == 0


def features_pack(pack: str, config: str = "unisono/configs/lm/h200.yaml") -> Path:
    """See the module doc; returns the path of features.sets."""
    d, root = Path(pack), Path(__file__).resolve().parents[1]
    desc = read_json(d / "features.json")["encoder"]
    inner = (desc.get("params") or {}).get("encoder")
    if desc["name"] != "resynth" or inner != "whisper_torch":
        raise UnisonoError(f"{d} holds features of {desc['fingerprint']}; a GPU run computes only resynth features "
                           "of whisper_torch from the stored codes (docs/features.md)")
    codec = Path(read_json(d / "codec.json")["source"]).resolve()
    if not _tracked(codec / "model.safetensors", root):  # git-ignored or outside: it travels in the pack, as it is
        copy_codec(codec, d / "codec")
        codec = (d / "codec").resolve()
        if not codec.is_relative_to(root):
            raise UnisonoError(f"the pack {d} is outside the repository {root}, so it does not travel")
    precision = ((desc["params"].get("encoder_params") or {}).get("precision")) or "float16"
    from unisono.whisper_torch import export_encoder  # noqa: PLC0415 (here: the CTranslate2 model is read)

    info = export_encoder(d / "whisper.safetensors", precision=precision)
    sets = d / "features.sets"
    rel = d.resolve().relative_to(root) if d.resolve().is_relative_to(root) else d
    weights = feature_task_weights(d, Path(config))
    sets.write_text(f"train.feature_weights={rel / 'whisper.safetensors'} "
                    f"train.feature_codec={codec.relative_to(root)} "
                    f"train.task_weights={json.dumps(weights, separators=(',', ':'))}\n")
    print(f"features-pack: {info['path']} ({info['bytes'] / MIB:.1f} MiB, {precision}, {info['fingerprint']}); "
          f"{sets}: {sets.read_text().strip()}")
    return sets


def add(result: str, key: str, row: str) -> None:
    data = read_json(result)
    data[key] = read_json(row)
    write_json(result, data)


def join(out: str, lm_dir: str, shards: str | None = None, checkpoint: str | None = None) -> Path:
    """See the module doc; returns the LM directory (or the packaged checkpoint)."""
    src, dst = Path(out), Path(lm_dir)
    result = read_json(src / "result.json")
    w = result["weights"]
    data = b"".join((src / p["file"]).read_bytes() for p in w["parts"])
    if hashlib.sha256(data).hexdigest() != w["sha256"]:
        raise UnisonoError(f"the parts in {src} do not join into the weights the run wrote (sha256 differs): "
                           "copy them again")
    if result.get("vocab") is None:
        raise UnisonoError(f"{src}/result.json holds no vocabulary; the run's checkpoint had no vocab.json")
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "model.safetensors").write_bytes(data)
    write_json(dst / "config.json", result["model_config"])
    write_json(dst / "vocab.json", result["vocab"])
    UnisonoLM.from_pretrained(dst)  # loads: config and weights agree
    if shards and checkpoint:
        from unisono.inference import Pipeline  # noqa: PLC0415 (here, not on the GPU: the codec's audio stack)

        return Pipeline.package(dst, shards, checkpoint)
    return dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    s = sub.add_parser("smoke")
    s.add_argument("config")
    s.add_argument("shards")
    s.add_argument("--work", required=True)
    s.add_argument("--device", default="cuda")
    s.add_argument("--steps", type=int, default=6)
    s.add_argument("--set", action="append", default=[])
    e = sub.add_parser("export")
    e.add_argument("run")
    e.add_argument("out")
    e.add_argument("--shards", required=True)
    e.add_argument("--val-shards")
    e.add_argument("--device", default="cuda")
    e.add_argument("--precision", default="auto")
    e.add_argument("--max-mib", type=float, default=60.0)
    e.add_argument("--part-mib", type=float, default=15.5)
    f = sub.add_parser("features-pack")
    f.add_argument("pack")
    f.add_argument("--config", default="unisono/configs/lm/h200.yaml", help="the run's config (its task weights)")
    a = sub.add_parser("add")
    a.add_argument("result")
    a.add_argument("key")
    a.add_argument("row")
    j = sub.add_parser("join")
    j.add_argument("out")
    j.add_argument("lm_dir")
    j.add_argument("--shards")
    j.add_argument("--checkpoint")
    args = p.parse_args(argv)
    try:
        if args.action == "smoke":
            smoke(args.config, args.shards, args.work, args.device, args.steps, args.set)
        elif args.action == "export":
            export(args.run, args.out, args.shards, args.val_shards, args.device, args.precision, args.max_mib,
                   args.part_mib)
        elif args.action == "features-pack":
            features_pack(args.pack, args.config)
        elif args.action == "add":
            add(args.result, args.key, args.row)
        else:
            print(join(args.out, args.lm_dir, args.shards, args.checkpoint))
    except UnisonoError as err:
        print(f"h200_lm.py {args.action}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
