"""The token store (unisono.data.store, built by `unisono tokenize --format store`): its examples equal the shards'
bit for bit, its packing is exact, the trainer reads it, a damaged or mismatched store is a one-line error, and
reading it imports no audio library, Lhotse, espeak or codec."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tok_helpers import make_corpus, make_test_codec

from unisono.data import tokenize as tk
from unisono.data.shards import STORE_FILE, ShardReader
from unisono.data.store import (
    METHODS,
    StoreReader,
    TokenStore,
    open_examples,
    pack_bits,
    pack_stream,
    tasks_in,
    unpack_bits,
    unpack_stream,
)
from unisono.errors import UnisonoError
from unisono.vocab import Vocab

ROOT = Path(__file__).resolve().parents[1]
GPU_IMAGE = Path(__file__).resolve().parent / "gpu_image"
OPTS = dict(splits=("train", "valid"), shard_size=3, bpe_size=300, semantic_units=8, progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny corpus tokenized as shards, and as a store in another --out reusing the shards' codes and tokenizers."""
    root = tmp_path_factory.mktemp("store")
    corpus = make_corpus(root / "corpus")
    tk.tokenize_corpus(corpus, root / "shards", make_test_codec, **OPTS)
    shutil.copytree(root / "shards" / ".codes", root / "store" / ".codes")
    stats = tk.tokenize_corpus(corpus, root / "store", make_test_codec, store=True,
                               vocab_path=str(root / "shards" / "vocab.json"), tokenizers_dir=str(root / "shards"),
                               **OPTS)
    return root, corpus, stats


def _by_key(reader):
    return {(ex["task"], ex["id"]): ex for ex in reader}


def test_store_examples_equal_the_shards_bit_for_bit(built):
    root, _, stats = built
    for split in ("train", "valid"):
        shards = _by_key(ShardReader(root / "shards", split=split))
        store = _by_key(StoreReader(root / "store", split=split))
        assert shards.keys() == store.keys()
        tasks = {t for t, _ in store}
        assert {"se", "tts", "asr", "vc", "tse", "speech_edit", "svs", "audio_qa"} <= tasks  # conditions, prompts,
        for key, a in shards.items():  # masks, semantic units, scores, qa variants
            b = store[key]
            assert set(a) == set(b), key
            for name in ("frames", "loss_mask", "cond_mask"):
                assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), (key, name)
    # the same order as the shards when not shuffled, and a shuffled, rank-split read covers every example once
    assert [(e["task"], e["id"]) for e in ShardReader(root / "shards")] == [
        (e["task"], e["id"]) for e in StoreReader(root / "store")]
    seen = [(e["task"], e["id"]) for r in range(2) for e in StoreReader(root / "store", rank=r, world_size=2,
                                                                        shuffle=True, seed=3)]
    assert sorted(seen) == sorted(shards_keys(root))
    st = stats["splits"]["train"]
    assert st["made_now"] and st["skipped"] == 0 and sum(st["examples"].values()) == len(shards_keys(root))
    assert tasks_in(root / "store") == tasks_in(root / "shards")


def shards_keys(root):
    return list(_by_key(ShardReader(root / "shards")))


def test_one_recording_is_stored_once_and_windows_only_as_far_as_read(built):
    root = built[0]
    store = TokenStore(root / "store" / "train" / STORE_FILE)
    keys = [k for k, _ in store.meta["recordings"]]
    assert len(keys) == len(set(keys))
    frames = dict(store.meta["recordings"])
    enroll = [k for k in keys if k.endswith(".enrollment")]
    assert enroll and all(frames[k] <= 150 for k in enroll)  # tse reads 3 s from the start of the enrollment
    # a speech cut serves tts, asr and instruct_tts (and prompts) from one copy of its codes
    speech = [c for c in store.meta["cuts"] if c["kind"] == "speech"]
    assert all(sum(k == c["key"] for k in keys) == 1 for c in speech)


def test_a_second_run_keeps_the_store_and_another_plan_is_refused(built):
    root, corpus, _ = built
    opts = dict(OPTS, splits=("train",))
    again = tk.tokenize_corpus(corpus, root / "store", make_test_codec, store=True, **opts)
    assert again["splits"]["train"]["made_now"] is False
    with pytest.raises(UnisonoError, match="store of another run"):
        tk.tokenize_corpus(corpus, root / "store", make_test_codec, store=True, tasks=["asr"], **opts)
    with pytest.raises(UnisonoError, match="holds token shards"):
        tk.tokenize_corpus(corpus, root / "shards", make_test_codec, store=True, **opts)
    with pytest.raises(UnisonoError, match="holds a token store"):
        tk.tokenize_corpus(corpus, root / "store", make_test_codec, **opts)


@pytest.mark.parametrize("n", [0, 1, 7, 1001])
def test_packing_round_trips_every_method(n):
    rng = np.random.default_rng(n)
    v = rng.integers(0, 1024, n).astype(np.uint16)
    if n:
        v[0], v[-1] = 1023, 0
    for method in METHODS:
        blob = METHODS[method][0](v, 10)
        assert np.array_equal(unpack_stream(method, blob, 10, n), v), method
    assert len(pack_bits(v, 10)) == -(-n * 10 // 8)
    assert np.array_equal(unpack_bits(pack_bits(v, 10), 10, n), v)
    method, blob, sizes = pack_stream(v, 10)
    assert len(blob) == min(sizes.values()) and np.array_equal(unpack_stream(method, blob, 10, n), v)
    with pytest.raises(UnisonoError, match="does not fit"):
        pack_stream(np.array([1024], dtype=np.uint16), 10)


def test_the_trainer_trains_from_a_store(built, tmp_path):
    import yaml

    from unisono.train.launch import make_trainer

    root = built[0]
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_seq_len": 1024},
                                   "train": {"max_steps": 3, "max_frames": 1024, "device": "cpu", "eval_batches": 1,
                                             "eval_every": 3, "tensorboard": False, "pool_size": 8,
                                             "task_weights": {"tts": 1.0, "se": 1.0, "asr": 1.0}}}))
    make_trainer(cfg, tmp_path / "run", shards=root / "store", val_shards=root / "store" / "valid").train(
        progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("step") == 3 for r in log) and all(np.isfinite(r["loss"]) for r in log if "loss" in r)


def _copy_store(built, tmp_path) -> Path:
    root = built[0]
    dst = tmp_path / "s"
    shutil.copytree(root / "store", dst, ignore=shutil.ignore_patterns(".codes"))
    return dst


def test_a_damaged_or_mismatched_store_is_a_one_line_error(built, tmp_path):
    dst = _copy_store(built, tmp_path)
    path = dst / "train" / STORE_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(UnisonoError, match="is damaged") as e:
        StoreReader(dst)
    assert "\n" not in str(e.value)
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(built[0] / "store" / "train" / STORE_FILE))  # a blob cut short: unpacking fails
    with safe_open(str(built[0] / "store" / "train" / STORE_FILE), framework="np") as f:
        meta = f.metadata()
    tensors["codes.0"] = tensors["codes.0"][:-3]
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(UnisonoError, match="is damaged") as e:
        StoreReader(dst)
    assert "\n" not in str(e.value)
    shutil.copy(built[0] / "store" / "train" / STORE_FILE, path)
    Vocab.build(["tts"], 3, 64, phones=5, bpe=300).save(dst / "train" / "vocab.json")  # another vocabulary
    with pytest.raises(UnisonoError, match="another vocabulary"):
        StoreReader(dst)
    shutil.copy(built[0] / "shards" / "train" / "asr-00000.safetensors", dst / "train")
    with pytest.raises(UnisonoError, match="both token shards and a token store"):
        open_examples(dst)


def test_tasks_the_store_cannot_hold_are_refused_before_any_work(tmp_path):
    with pytest.raises(UnisonoError, match="audio_feat segment"):
        tk.tokenize_corpus(tmp_path / "nothing", tmp_path / "out", make_test_codec, store=True, tasks=["asr"],
                           templates_paths=[_feat_template(tmp_path)], **OPTS)
    assert not (tmp_path / "out").exists()


def _feat_template(tmp_path) -> str:
    p = tmp_path / "t.yaml"
    p.write_text("version: 1\ntasks:\n  asr:\n    conditions:\n      - {name: speech, modality: audio_feat, source: "
                 "audio}\n    target: {modality: bpe, source: text}\n")
    return str(p)


def test_reading_a_store_imports_no_audio_library_lhotse_espeak_or_codec(built):
    """As on the GPU image (soundfile, soxr, lhotse unimportable; phonemizer too): read the store, assemble every
    example; none of them, nor the codec, tokenize or the manifests, were imported."""
    code = (
        "import sys; sys.modules['phonemizer'] = None\n"
        "from unisono.data.store import open_examples\n"
        f"n = sum(1 for _ in open_examples({str(built[0] / 'store')!r}))\n"
        "heavy = [m for m in ('soundfile', 'soxr', 'lhotse', 'phonemizer') if sys.modules.get(m) is not None]\n"
        "heavy += [m for m in sys.modules if m.startswith(('unisono.codec', 'unisono.data.tokenize', "
        "'unisono.data.own', 'unisono.data.manifests', 'unisono.text.semantic'))]\n"
        "print(n, heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{GPU_IMAGE}:{ROOT}"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    n, heavy = r.stdout.split(" ", 1)
    assert int(n) > 20 and heavy.strip() == "[]"


@pytest.mark.slow
def test_the_gpu_command_trains_from_a_store_as_on_the_gpu_image(tiny_checkpoint, tmp_path):
    """scripts/h200_lm.sh on a token store (DEVICE=cpu, a tiny model, a 3 s budget; soundfile, soxr and lhotse
    unimportable): smoke, training, export with validation loss per task, as on shards."""
    import functools

    from unisono.data.tokenize import load_codec_dir

    root = tiny_checkpoint.parent
    store = tmp_path / "store"
    shutil.copytree(root / "shards" / ".codes", store / ".codes")
    tk.tokenize_corpus(root / "corpus", store, functools.partial(load_codec_dir, str(root / "codec")), store=True,
                       tasks=["tts", "vc"], splits=("train",), vocab_path=str(root / "shards" / "vocab.json"),
                       tokenizers_dir=str(root / "shards"), progress=False)
    out = tmp_path / "out"
    tiny = ("model.d_model=32 model.n_layers=1 model.n_heads=2 model.max_seq_len=1024 train.max_frames=2048 "
            "train.pool_size=16 train.task_weights=null train.warmup_steps=2 train.log_every=1 train.eval_every=4 "
            "train.eval_batches=2")
    env = {**os.environ, "PYTHONPATH": f"{GPU_IMAGE}:{ROOT}", "DEVICE": "cpu", "WORK": str(tmp_path / "w"),
           "SET": tiny, "SMOKE_STEPS": "2", "GEN_SECONDS": "0.1"}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "h200_lm.sh"), str(store), str(out), "3"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert set(result["val_loss"]) == {"tts", "vc"} and "smoke: ok" in (out / "run.log").read_text()
