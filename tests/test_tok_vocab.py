import hashlib
import json
from pathlib import Path

import pytest
import torch

import unisono
from unisono.data.shards import vocab_hash
from unisono.errors import UnisonoError
from unisono.vocab import NUM_SPECIAL, NUM_TASK_SLOTS, Vocab

TASKS = ["tts", "asr", "se", "vc", "svs"]


def make(tasks=TASKS, **kw):
    args = dict(num_codebooks=3, codebook_size=64, phones=40, bpe=300, midi=229, semantic=16)
    args.update(kw)
    return Vocab.build(tasks, **args)


def test_layout_is_independent_of_task_and_config_order():
    a = make(TASKS)
    b = make(list(reversed(TASKS)))
    # sizes given in another keyword order (as if read from a config with other key order)
    cfg = {"semantic": 16, "midi": 229, "bpe": 300, "phones": 40}
    c = Vocab.build(sorted(TASKS, key=len), 3, 64, **cfg)
    assert a == b == c
    assert a.to_dict() == c.to_dict()
    assert a.task_id("asr") == NUM_SPECIAL + 0 and a.task_id("vc") == NUM_SPECIAL + 4


def test_ranges_are_contiguous_and_named():
    v = make()
    assert v.ranges["special"].start == 0 and v.ranges["special"].size == NUM_SPECIAL
    assert v.ranges["task"].start == NUM_SPECIAL
    assert v.ranges["phones"].start == NUM_SPECIAL + NUM_TASK_SLOTS
    stops = [r.stop for r in v.ranges.values()]
    starts = [r.start for r in v.ranges.values()]
    assert starts[1:] == stops[:-1]
    assert v.size == NUM_SPECIAL + NUM_TASK_SLOTS + 40 + 300 + 229 + 16 + 3 * 64
    assert v.modality_range("codec", 2).stop == v.size
    assert v.pad_id == 0
    assert v.name_of(v.task_id("tts")) == "<task:tts>"
    assert v.name_of(v.modality_range("codec", 1).start + 5) == "codec_1:5"
    assert v.name_of(v.end_id("phones")) == "<phones_end>"


def test_save_load_round_trip_and_key_order(tmp_path):
    v = make(fingerprints={"phones": "abc", "bpe": "def"})
    v.save(tmp_path / "vocab.json")
    w = Vocab.load(tmp_path / "vocab.json")
    assert w == v and w.size == v.size
    # reorder every key of the JSON file: same vocabulary
    d = json.loads((tmp_path / "vocab.json").read_text())
    shuffled = {k: d[k] for k in reversed(list(d))}
    shuffled["ranges"] = {k: d["ranges"][k] for k in reversed(list(d["ranges"]))}
    shuffled["tasks"] = {k: d["tasks"][k] for k in reversed(list(d["tasks"]))}
    (tmp_path / "v2.json").write_text(json.dumps(shuffled))
    assert Vocab.load(tmp_path / "v2.json") == v


def test_edited_vocab_file_is_refused(tmp_path):
    v = make()
    d = v.to_dict()
    d["ranges"]["bpe"][0] += 1
    (tmp_path / "vocab.json").write_text(json.dumps(d))
    with pytest.raises(UnisonoError, match="corrupt|edited"):
        Vocab.load(tmp_path / "vocab.json")


@pytest.mark.parametrize(
    "other, match",
    [
        (dict(codebook_size=128), "codebook_size"),
        (dict(num_codebooks=4), "num_codebooks"),
        (dict(bpe=301), "range 'bpe'"),
        (dict(fill="repeat"), "fill"),
        (dict(fingerprints={"phones": "zzz"}), "phones tokenizer"),
    ],
)
def test_check_compatible_refuses_other_layouts(other, match):
    a = make(fingerprints={"phones": "abc"})
    b = make(**{"fingerprints": {"phones": "abc"}, **other})
    with pytest.raises(UnisonoError, match=match):
        a.check_compatible(b)


def test_check_compatible_tasks():
    a = make(["tts", "asr"])
    a.check_compatible(a.with_task("se"))  # a new task at a free slot is compatible
    b = make(["asr", "se", "tts"])  # tts has another id here
    with pytest.raises(UnisonoError, match="task 'tts'"):
        a.check_compatible(b)


def test_with_task_keeps_every_other_id():
    a = make(["tts", "asr"])
    b = a.with_task("new_task")
    assert b.task_id("new_task") == NUM_SPECIAL + 2
    assert all(b.task_id(t) == a.task_id(t) for t in a.tasks)
    assert b.size == a.size
    with pytest.raises(UnisonoError, match="not in this vocabulary"):
        a.task_id("new_task")


@pytest.mark.parametrize("fill", ["pad", "repeat"])
def test_generation_masks(fill):
    v = make(fill=fill)
    m = v.generation_mask("codec")
    assert m.shape == (3, v.size) and m.dtype == torch.bool
    for k in range(3):
        r = v.modality_range("codec", k)
        assert m[k, r.start : r.stop].all()
        assert int(m[k].sum()) == 64 + 1
    assert m[0, v.end_id("codec")]
    assert m[1, v.end_id("codec")] == (fill == "repeat")
    t = v.generation_mask("bpe")
    r = v.ranges["bpe"]
    assert t[0, r.start : r.stop].all() and t[0, v.end_id("bpe")] and int(t[0].sum()) == 301
    if fill == "pad":
        assert t[1].nonzero().flatten().tolist() == [v.pad_id]
    else:
        assert torch.equal(t[1], t[0])
    with pytest.raises(UnisonoError):
        v.generation_mask("text_emb")


def test_token_ids_are_bounds_checked():
    v = make()
    with pytest.raises(UnisonoError, match="0..39"):
        v.to_global("phones", [0, 40])
    with pytest.raises(UnisonoError, match="modality"):
        v.end_id("video")


SHIPPED_VOCAB = Path(unisono.__file__).parent / "assets" / "unisono-small" / "vocab.json"


def test_audio_feat_specials_take_reserved_ids_and_keep_every_old_id():
    v = make()
    assert v.start_id("audio_feat") == 20 and v.end_id("audio_feat") == 21 and v.placeholder_id("audio_feat") == 22
    assert v.special_id("<audio_feat>") == 22 and v.modality_range("audio_feat").start == 22
    assert v.placeholder_id("text_emb") == v.special_id("<text_emb>") == 7
    assert v.name_of(22) == "<audio_feat>" and v.name_of(23) == "<reserved_3>"  # still-reserved ids keep their names
    with pytest.raises(UnisonoError, match="audio_feat is a continuous condition"):
        v.generation_mask("audio_feat")
    with pytest.raises(UnisonoError, match="not a continuous modality"):
        v.placeholder_id("codec")


def test_the_shipped_vocab_json_still_loads_with_every_id_unchanged():
    stored = json.loads(SHIPPED_VOCAB.read_text())
    assert stored["specials"]["<reserved_0>"] == 20  # written before audio_feat existed
    v = Vocab.load(SHIPPED_VOCAB)
    for name, tid in stored["specials"].items():
        assert v.name_of(tid) == name or name.startswith("<reserved_")
    assert {n: [r.start, r.size] for n, r in v.ranges.items()} == stored["ranges"]
    assert v.tasks == stored["tasks"] and v.size == stored["size"]
    assert v.placeholder_id("audio_feat") == 22
    # shards made with it carry the hash the previous version computed (sha256 of the stored JSON): they still read
    old_hash = hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()[:16]
    assert vocab_hash(v) == old_hash == vocab_hash(Vocab.from_dict(v.to_dict()))


def test_an_old_vocab_file_is_compatible_with_a_new_one(tmp_path):
    new = make(fingerprints={"phones": "abc"})
    old = new.to_dict()  # as the previous version wrote it: the three new ids reserved
    names = {tid: name for name, tid in old["specials"].items()}
    for tid in (20, 21, 22):
        names[tid] = f"<reserved_{tid - 20}>"
    old["specials"] = {name: tid for tid, name in names.items()}
    (tmp_path / "vocab.json").write_text(json.dumps(old))
    back = Vocab.load(tmp_path / "vocab.json")
    back.check_compatible(new)
    new.check_compatible(back)
    assert back == new
    del old["specials"]["<reserved_3>"]
    old["specials"]["<bogus>"] = 23  # a name this version does not know (a newer file)
    (tmp_path / "vocab.json").write_text(json.dumps(old))
    with pytest.raises(UnisonoError, match="special id 23 '<bogus>'"):
        Vocab.load(tmp_path / "vocab.json")
