"""Bytes per hour of primary audio: the token store (``unisono tokenize --format store``) beside token shards of
the same corpus, split and tasks, and what a larger corpus's store would weigh (docs/tokens.md, "The token store").

    python benchmarks/store_size.py --shards SHARDS --store STORE [--split train] [--hours 40] [--json OUT.json]

Parts: the codes per codebook (and per packing method tried: the store keeps the smallest), the text-side token
ids, the metadata; the codes once more per kind of recording (the cuts' own audio, and each condition recording
role with the tasks that read it), each group packed alone, so what dropping a task's condition recordings saves
is read off the table. Also the read speed of both (examples per second, one process: the store assembles them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unisono.data.shards import STORE_FILE, ShardReader, list_shards, resolve_split_dir  # noqa: E402
from unisono.data.store import StoreReader, TokenStore, pack_stream  # noqa: E402

MIB = 2**20


def role_tasks(templates: dict) -> dict[str, list[str]]:
    """Condition recording role -> the tasks that read it as codes."""
    out = defaultdict(set)
    for task, t in templates.items():
        for s in t.get("conditions", []):
            if s["source"].startswith("recording.") and s["modality"] == "codec":
                out[s["source"].split(".", 1)[1]].add(task)
    return {r: sorted(ts) for r, ts in out.items()}


def groups(store: TokenStore) -> dict[str, list[str]]:
    """Recording keys per group: ``primary`` (the cuts' own audio, also the speaker prompts' source) and each role."""
    role_of = {k: r for c in store.meta["cuts"] for r, k in (c.get("rec") or {}).items()}
    out = defaultdict(list)
    for key, _ in store.meta["recordings"]:
        out[role_of.get(key.split("@")[0], "primary")].append(key)
    return dict(out)


def group_bytes(store: TokenStore, keys: list[str]) -> tuple[int, int]:
    """(frames, bytes) of the codes of ``keys`` packed alone, codebook by codebook."""
    codes = np.concatenate([store.codes(k).numpy() for k in keys], axis=1)
    bits = int(store.meta["code_bits"])
    return int(codes.shape[1]), sum(len(pack_stream(codes[k].astype(np.uint16), bits)[1]) for k in range(len(codes)))


def read_rate(reader) -> float:
    t0 = time.perf_counter()
    n = sum(1 for _ in reader)
    return n / (time.perf_counter() - t0)


def measure(shards: Path, store_dir: Path, split: str, hours: float) -> dict:
    path = store_dir / split / STORE_FILE
    store = TokenStore(path)
    import safetensors.numpy as stn

    blobs = {k: int(v.size) for k, v in stn.load_file(str(path)).items()}
    primary_h = store.meta["stats"]["primary_seconds"] / 3600
    shard_bytes = sum(p.stat().st_size for p in list_shards(resolve_split_dir(shards, split)))
    total = path.stat().st_size
    frames = sum(n for _, n in store.meta["recordings"])
    parts = {name: {"bytes": b, "bytes_per_hour": b / primary_h,
                    **({"bits_per_frame": 8 * b / frames} if name.startswith("codes") else {})}
             for name, b in sorted(blobs.items())}
    header = total - sum(blobs.values())
    parts["header"] = {"bytes": header, "bytes_per_hour": header / primary_h}
    tasks_of = role_tasks(store.meta["templates"])
    by_group = {}
    for g, keys in sorted(groups(store).items()):
        f, b = group_bytes(store, keys)
        by_group[g] = {"recordings": len(keys), "hours": f / 50 / 3600 if f else 0.0, "bytes": b,
                       "bytes_per_primary_hour": b / primary_h, "tasks": tasks_of.get(g, ["(targets, prompts)"])}
    return {
        "split": split, "primary_hours": primary_h, "stored_code_hours": frames / 50 / 3600,
        "examples": sum(store.meta["stats"]["examples"].values()), "num_codebooks": store.meta["num_codebooks"],
        "store_bytes": total, "shard_bytes": shard_bytes,
        "store_bytes_per_hour": total / primary_h, "shard_bytes_per_hour": shard_bytes / primary_h,
        "parts": parts, "groups": by_group,
        "methods_tried_bits_per_value": _tried(store, path, frames),
        "extrapolated": {"hours": hours, "store_mib": total / primary_h * hours / MIB,
                         "shards_mib": shard_bytes / primary_h * hours / MIB, "limit_mib": 56},
        "read_examples_per_s": {"shards": read_rate(ShardReader(shards, split=split)),
                                "store": read_rate(StoreReader(store_dir, split=split))},
    }


def _tried(store: TokenStore, path: Path, frames: int) -> dict:
    """Bits per value of every packing method on every codebook (what the store chose from)."""
    bits = int(store.meta["code_bits"])
    out = {}
    for k in range(int(store.meta["num_codebooks"])):
        v = store.codes_all[k].numpy().astype(np.uint16)
        _, _, sizes = pack_stream(v, bits)
        out[f"codes.{k}"] = {m: round(8 * s / max(1, frames), 3) for m, s in sizes.items()}
    return out


def print_table(r: dict) -> None:
    h = r["primary_hours"]
    print(f"split {r['split']}: {h:.3f} h of primary audio, {r['stored_code_hours']:.3f} h of codes stored "
          f"(conditions included), {r['examples']} examples, {r['num_codebooks']} codebooks")
    print(f"{'part':<14}{'bytes':>12}{'KiB/h':>10}{'bits/frame':>12}")
    for name, p in r["parts"].items():
        bpf = f"{p['bits_per_frame']:.2f}" if "bits_per_frame" in p else ""
        print(f"{name:<14}{p['bytes']:>12,}{p['bytes_per_hour'] / 1024:>10.1f}{bpf:>12}")
    print(f"{'store total':<14}{r['store_bytes']:>12,}{r['store_bytes_per_hour'] / 1024:>10.1f}")
    print(f"{'shards':<14}{r['shard_bytes']:>12,}{r['shard_bytes_per_hour'] / 1024:>10.1f}   "
          f"({r['shard_bytes'] / r['store_bytes']:.1f}x the store)")
    print(f"\n{'codes of':<14}{'recs':>6}{'hours':>8}{'bytes':>12}{'KiB/primary h':>15}  tasks")
    for g, x in r["groups"].items():
        kib = x["bytes_per_primary_hour"] / 1024
        print(f"{g:<14}{x['recordings']:>6}{x['hours']:>8.3f}{x['bytes']:>12,}{kib:>15.1f}  {', '.join(x['tasks'])}")
    print("\nbits per value by packing method:")
    for s, m in r["methods_tried_bits_per_value"].items():
        print(f"  {s}: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()))
    e = r["extrapolated"]
    print(f"\n{e['hours']:g} h of primary audio: store {e['store_mib']:.1f} MiB, shards {e['shards_mib']:.1f} MiB "
          f"(limit {e['limit_mib']} MiB with the code)")
    rr = r["read_examples_per_s"]
    print(f"read, one process: shards {rr['shards']:.0f} examples/s, store {rr['store']:.0f} examples/s (assembled)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True, type=Path, help="`unisono tokenize` output (shards)")
    ap.add_argument("--store", required=True, type=Path, help="`unisono tokenize --format store` output")
    ap.add_argument("--split", default="train")
    ap.add_argument("--hours", type=float, default=40.0, help="extrapolate to this many hours of primary audio")
    ap.add_argument("--json", type=Path, help="write the figures here")
    a = ap.parse_args()
    r = measure(a.shards, a.store, a.split, a.hours)
    print_table(r)
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
