"""Test helpers for the tokenizer tests: a tiny corpus following docs/corpus.md, and a codec test double.

Neither is used outside tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from unisono import audio as uaudio

SR = 16000


class CodecTestDouble:
    """A deterministic stand-in for a codec (the shared codec interface), for tests only.

    ``encode`` maps each 320-sample frame to K codes computed from its RMS and zero-crossing count;
    ``decode`` gives a sine whose amplitude follows codebook 0. Not a real codec: it only has the
    interface and is deterministic.
    """

    def __init__(self, num_codebooks: int = 3, codebook_size: int = 64, sample_rate: int = SR, hop: int = 320):
        self.num_codebooks, self.codebook_size, self.sample_rate, self.hop = (
            num_codebooks,
            codebook_size,
            sample_rate,
            hop,
        )
        self.frame_rate = sample_rate / hop
        self.calls = 0

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        assert wav.dim() == 3 and wav.shape[1] == 1, wav.shape
        B, _, S = wav.shape
        T = -(-S // self.hop)
        x = torch.nn.functional.pad(wav[:, 0], (0, T * self.hop - S)).reshape(B, T, self.hop)
        rms = x.pow(2).mean(-1).sqrt()
        zc = (x[..., 1:] * x[..., :-1] < 0).sum(-1)
        codes = [((rms * 997 * (k + 1)).long() + zc * (k + 2)) % self.codebook_size for k in range(self.num_codebooks)]
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        B, K, T = codes.shape
        amp = codes[:, 0].float() / self.codebook_size
        env = amp.repeat_interleave(self.hop, dim=-1)
        t = torch.arange(T * self.hop) / self.sample_rate
        return (env * torch.sin(2 * torch.pi * 220 * t))[:, None]


def make_test_codec():
    return CodecTestDouble()


PHONES = [
    "h ə l ˈ oʊ | w ˈ ɜː l d",
    "ð ə | k ˈ æ t | s ˈ æ t",
    "ɡ ˈ ʊ d | m ˈ ɔːɹ n ɪ ŋ",
    "s ˈ iː | j uː | s ˈ uː n",
]
TEXTS = ["hello world", "the cat sat", "good morning", "see you soon"]


def _tone(seconds: float, freq: float, rng: np.random.Generator, noise: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)
    return x.astype(np.float32)[None]


def _rec(root: Path, rel: str, wav: np.ndarray, rec_id: str) -> dict:
    uaudio.save(root / rel, wav, SR)
    n = wav.shape[-1]
    return {"id": rec_id, "sources": [{"type": "file", "channels": [0], "source": rel}],
            "sampling_rate": SR, "num_samples": n, "duration": n / SR, "channel_ids": [0]}


KIND_TASKS = {
    "speech": ["tts", "asr", "instruct_tts"],
    "noisy": ["se"],
    "reverb": ["dereverb"],
    "mixture": ["tse"],
    "vc_pair": ["vc"],
    "speech_edit": ["speech_edit"],
    "singing": ["svs"],
    "music": ["text_to_music", "caption", "audio_qa"],
    "sound": ["text_to_sound", "caption", "audio_qa"],
    "scene": ["caption", "audio_qa"],
    "audio_edit": ["audio_edit"],
}
ROLES = {"noisy": ["noisy"], "reverb": ["reverberant"], "mixture": ["mixture", "enrollment"],
         "vc_pair": ["source", "prompt"], "singing": ["prompt"], "speech_edit": ["original"],
         "audio_edit": ["original"]}


def make_corpus(root: str | Path, per_kind: int = 2, splits=("train", "valid"), seed: int = 0) -> Path:
    """A tiny corpus in ``root`` (docs/corpus.md layout): ``per_kind`` cuts of every kind per split."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split in splits:
        cuts, recs, sups = [], [], []
        for kind, tasks in KIND_TASKS.items():
            for i in range(per_kind):
                cid = f"{split}-{kind}-{i:03d}"
                dur = 0.6 + 0.2 * i
                speechy = kind in ("speech", "noisy", "reverb", "mixture", "vc_pair", "speech_edit", "singing")
                rec = _rec(root, f"audio/{split}/{cid}.flac", _tone(dur, 150 + 40 * i + 10 * len(kind), rng, 0.01), cid)
                custom = {"kind": kind, "tasks": tasks, "split": split, "params": {}}
                for role in ROLES.get(kind, []):
                    custom[role] = _rec(
                        root, f"audio/{split}/{cid}.{role}.flac", _tone(dur + 0.1, 300, rng, 0.05), f"{cid}.{role}"
                    )
                sup = {"id": cid, "recording_id": cid, "start": 0.0, "duration": rec["duration"], "channel": 0}
                if speechy:
                    j = i % len(PHONES)
                    sup.update(text=TEXTS[j], speaker=f"{kind}-spk{0}", language="en", custom={"phones": PHONES[j]})
                if kind == "speech":
                    custom["caption"] = "a calm female voice"
                    custom["instruction"] = "speak slowly with a calm female voice"
                    custom["params"] = {"voice": "en-us+f3", "pitch": 50, "speed": 150}
                if kind == "speech_edit":
                    custom["params"] = {"original_text": "hello there", "edited_words": [["there", "world"]],
                                        "edit_span": [0.2, 0.5], "original_span": [0.25, 0.55]}
                if kind == "singing":
                    if i % 2 == 0:  # syllables (phonemized with espeak-ng when tokenized)
                        custom["params"] = {"notes": [[60, 0.0, 0.25, "hel"], [64, 0.3, 0.6, "lo"]], "tempo_bpm": 100}
                        sup.update(text="hello", speaker="singer-0", language="en", custom={"phones": "h ə l ˈ oʊ"})
                    else:  # one note per word, as the built-in corpus sings
                        custom["params"] = {
                            "notes": [[60, 0.0, 0.25, "hello"], [64, 0.3, 0.6, "world"]],
                            "tempo_bpm": 100,
                        }
                        sup.update(text="hello world", speaker="singer-0", language="en", custom={"phones": PHONES[0]})
                if kind in ("music", "sound", "scene", "audio_edit"):
                    custom["caption"] = f"a short {kind} clip number {i}"
                    custom["qa"] = [["what is it?", f"a {kind}"], ["how long is it?", f"{dur:.1f} seconds"]]
                    if kind != "audio_edit":
                        sup.update(text=custom["caption"])
                if kind == "music":  # the metadata the music plan is written from
                    custom["params"] = {"instrument": "piano", "tempo_bpm": 100 + i, "key": "C", "mode": "major",
                                        "contour": "rising", "register": "middle", "drums": bool(i % 2)}
                if kind == "sound":
                    custom["params"] = {"event": "beep", "count": 1 + i}
                if kind == "scene":
                    custom["params"] = {
                        "events": [
                            {"event": "knock", "start": 0.1, "end": 0.3},
                            {"event": "bell", "start": 0.35, "end": 0.5},
                        ],
                        "background": "silence",
                    }
                if kind == "audio_edit":
                    custom["instruction"] = "add a knock at 0.2 s"
                    custom["params"] = {"events": [{"event": "knock", "start": 0.2, "end": 0.3}], "edit": "add",
                                        "edited_event": "knock"}
                recs.append(rec)
                sups.append(sup)
                cuts.append({"id": cid, "start": 0.0, "duration": rec["duration"], "channel": 0,
                             "recording": rec, "supervisions": [sup], "custom": custom, "type": "MonoCut"})
        mdir = root / "manifests" / split
        mdir.mkdir(parents=True, exist_ok=True)
        for name, rows in (("cuts", cuts), ("recordings", recs), ("supervisions", sups)):
            with open(mdir / f"{name}.jsonl", "w") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (root / "stats.json").write_text(json.dumps({"test_fixture": True}))
    return root
