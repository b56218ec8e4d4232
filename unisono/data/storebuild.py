"""``unisono tokenize --format store``: a token store (:mod:`unisono.data.store`) instead of token shards.

Every example the shards would hold (each task's cuts and qa variants, in the shards' plan) is assembled once on
the corpus by :class:`unisono.data.tokenize.CorpusExampleMaker` while a trace records what it read: the codes of
each recording (and how many frames from its start, when a template reads only a fixed window from the start: a
3 s enrollment or voice prompt), the token ids of each text-side segment, the mask spans and condition recordings.
The store files those once per split; an item that fails is skipped with its reason (as tokenize skips it), so a
reader of the store makes exactly the shards' examples. Codes come from ``OUT/.codes`` when tokenize (of either
format) has encoded them before, else from the codec.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from unisono.data.examples import recording_key
from unisono.data.shards import STORE_FILE, vocab_hash
from unisono.data.sources import speaker_of
from unisono.data.store import TokenStore, segment_ids, segment_key, write_store
from unisono.data.tokenize import CorpusExampleMaker, plan_shards, run_jobs, worker_maker
from unisono.errors import UnisonoError
from unisono.fileio import read_json
from unisono.vocab import Vocab

CHUNK = 128  # items per worker job


class TracingMaker(CorpusExampleMaker):
    """:class:`CorpusExampleMaker` that records what each example reads (:attr:`trace`, reset per item)."""

    def start_trace(self) -> None:
        self.trace = {"codes": {}, "segments": {}, "spans": {}, "roles": {}, "feats": {}}

    def feats(self, obj, spec) -> torch.Tensor:
        """The store keeps the recording's codes (its features are computed from them as training starts); the
        example assembled here gets zeros of the features' shape (it is only traced)."""
        codes = self.codes(obj, spec)
        self.trace["feats"][recording_key(obj, spec)] = True
        return torch.zeros(codes.shape[1], int(self.features.dim), dtype=torch.float16)

    def codes(self, obj, spec) -> torch.Tensor:
        codes = super().codes(obj, spec)
        full = spec.seconds is None or spec.source_kind == "speaker_prompt"
        need = codes.shape[1] if full else min(codes.shape[1], self.encoder.frames(spec.seconds))
        key = recording_key(obj, spec)
        prev = self.trace["codes"].get(key)
        if prev is None or prev.shape[1] < need:
            self.trace["codes"][key] = codes[:, :need].to(torch.int16).numpy()
        return codes

    def recording(self, cut, role: str):
        rec = super().recording(cut, role)
        self.trace["roles"].setdefault(cut.id, {})[role] = recording_key(rec)
        return rec

    def text_segment(self, spec, cut, variant: int):
        seg = super().text_segment(spec, cut, variant)
        if spec.modality == "text_emb":
            raise UnisonoError("the token store holds no text_emb vectors")
        self.trace["segments"].setdefault(cut.id, {})[segment_key(spec, variant)] = segment_ids(self.vocab, seg)
        return seg

    def semantic_segment(self, spec, cut, rng):
        seg = super().semantic_segment(spec, cut, rng)
        self.trace["segments"].setdefault(cut.id, {})[segment_key(spec, 0)] = segment_ids(self.vocab, seg)
        return seg

    def span(self, spec, cut, variant: int):
        value = super().span(spec, cut, variant)
        self.trace["spans"].setdefault(cut.id, {})[segment_key(spec, variant)] = [float(x) for x in value]
        return value


def trace_items(job: dict) -> dict:
    """Assemble ``job["items"]`` (``[task, cut_id, variant]`` of ``job["split"]``) and collect what they read."""
    maker = worker_maker(job["split"], TracingMaker)
    enc0 = maker.encoded_seconds
    got = {"codes": {}, "segments": {}, "spans": {}, "roles": {}, "feats": {}, "ok": [], "skipped": []}
    for task, cut_id, variant in job["items"]:
        maker.start_trace()
        try:
            maker.make(task, cut_id, variant)
        except UnisonoError as e:
            got["skipped"].append([task, cut_id, str(e)])
            continue
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, OSError) as e:
            got["skipped"].append([task, cut_id, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"])
            continue
        got["ok"].append([task, cut_id, variant])
        merge_trace(got, maker.trace)
    got["encoded_seconds"] = maker.encoded_seconds - enc0
    return got


def merge_trace(into: dict, trace: dict) -> None:
    """Add a trace (or a job's result) to ``into``: the longest codes per key, every segment, span and role."""
    for key, codes in trace["codes"].items():
        if key not in into["codes"] or into["codes"][key].shape[1] < codes.shape[1]:
            into["codes"][key] = codes
    for part in ("segments", "spans", "roles"):
        for cid, d in trace[part].items():
            into[part].setdefault(cid, {}).update(d)
    into["feats"].update(trace["feats"])


def _plan_hash(items: list, vocab: Vocab, seed: int, templates: dict) -> str:
    blob = json.dumps([vocab_hash(vocab), seed, items, templates], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _cut_meta(cut, roles: dict) -> dict:
    d = {"id": cut.id, "key": recording_key(cut), "kind": (cut.custom or {}).get("kind"),
         "dur": round(float(cut.duration), 3)}
    spk = speaker_of(cut)
    if spk is not None:
        d["spk"] = spk
    if roles:
        d["rec"] = roles
    return d


def build_split_store(out: Path, split: str, cuts: list, templates: dict, selected: list[str], cfg: dict,
                      jobs: int, progress: bool) -> dict:
    """Make (or keep, when an identical one exists) ``OUT/{split}/store.safetensors``; returns its statistics."""
    vocab = Vocab.load(out / "vocab.json")
    items = [[j["task"], cid, v] for j in plan_shards({split: cuts}, templates, selected, 10**9)
             for cid, v in j["items"]]
    tpl = {t: templates[t].to_dict() for t in selected}
    h = _plan_hash(items, vocab, cfg["seed"], tpl)
    path = out / split / STORE_FILE
    if path.exists():
        meta = TokenStore(path).meta
        if meta.get("plan") != h:
            raise UnisonoError(f"{path} is a store of another run (other corpus, tasks or options); use a new --out "
                               "or delete it")
        return {"split": split, "made_now": False, **meta["stats"]}
    t0 = time.perf_counter()
    chunks = [{"split": split, "items": items[i : i + CHUNK]} for i in range(0, len(items), CHUNK)]
    bar = tqdm(total=len(items), unit="item", disable=not progress, desc=f"store {split}", file=sys.stderr)
    results = run_jobs(trace_items, chunks, cfg, jobs, bar)
    bar.close()
    got = {"codes": {}, "segments": {}, "spans": {}, "roles": {}, "feats": {}}
    for r in results:
        merge_trace(got, r)
    ok = sorted((x for r in results for x in r["ok"]), key=lambda x: (x[0], x[1], x[2]))
    skipped = sorted(x for r in results for x in r["skipped"])
    used = {cid for _, cid, _ in ok}
    cut_meta = [_cut_meta(c, got["roles"].get(c.id, {})) for c in sorted(cuts, key=lambda c: c.id)
                if c.id in used or speaker_of(c) is not None]
    per_task = Counter(t for t, _, _ in ok)
    stats = {"examples": dict(sorted(per_task.items())), "skipped": len(skipped),
             "primary_seconds": round(sum(float(c.duration) for c in cuts if c.id in used), 2),
             "encoded_seconds": round(sum(r["encoded_seconds"] for r in results), 2),
             "seconds": round(time.perf_counter() - t0, 2)}
    meta = {"format_version": 1, "split": split, "seed": cfg["seed"], "templates": tpl, "plan": h,
            "codec": {k: read_json(out / "codec.json")[k] for k in ("sample_rate", "frame_rate")},
            "cuts": cut_meta, "spans": got["spans"], "skipped": skipped, "stats": stats,
            "feature_keys": sorted(got["feats"]), "features": cfg.get("features"),
            "items": {t: [[c, v] for tt, c, v in ok if tt == t] for t in sorted(per_task)}}
    written = write_store(path, vocab, got["codes"], meta, got["segments"])
    return {"split": split, "made_now": True, **stats, "bytes": written["bytes"], "methods": written["methods"],
            "tried": written["tried"], "stored_frames": written["frames"]}


def build_stores(out: Path, cuts_by_split: dict, templates: dict, selected: list[str], cfg: dict, jobs: int,
                 progress: bool) -> dict:
    """The store of every split (see the module doc); returns ``{"format": "store", "splits": {...}}``."""
    per = {}
    for split in sorted(cuts_by_split):
        per[split] = build_split_store(out, split, cuts_by_split[split], templates, selected, cfg, jobs, progress)
    return {"format": "store", "splits": per, "skipped": []}
