import pytest

from unisono.errors import UnisonoError
from unisono.text import midi
from unisono.text.bpe import BPETokenizer
from unisono.text.phones import PhoneTokenizer

PHONES = ["h ə l ˈ oʊ | w ˈ ɜː l d", "ð ə | k ˈ æ t", "ɡ ˈ ʊ d | m ˈ ɔːɹ n ɪ ŋ"]


def test_phone_round_trip_and_order_free_inventory(tmp_path):
    tok = PhoneTokenizer.fit(PHONES)
    assert PhoneTokenizer.fit(list(reversed(PHONES))).symbols == tok.symbols
    for p in PHONES:
        ids = tok.encode(p)
        assert len(ids) == len(p.split())
        assert tok.decode(ids) == p
    tok.save(tmp_path / "phones.json")
    again = PhoneTokenizer.load(tmp_path / "phones.json")
    assert again.symbols == tok.symbols and again.fingerprint() == tok.fingerprint()


def test_unknown_phones_map_to_unk():
    tok = PhoneTokenizer.fit(PHONES)
    ids = tok.encode("h ə ʒ | x")
    assert ids[2] == tok.unk_id and ids[4] == tok.unk_id and ids[3] == 1
    assert tok.count_unknown("h ə ʒ | x") == 2
    assert tok.decode(ids) == "h ə <unk> | <unk>"
    with pytest.raises(UnisonoError):
        tok.decode([tok.size])


def test_bpe_round_trip(tmp_path):
    texts = ["the cat sat on the mat", "a calm female voice", "add a knock at 1.5 s", "what is it?"] * 3
    tok = BPETokenizer.train(texts, vocab_size=300)
    assert 256 <= tok.size <= 300
    for t in texts + ["unseen wörds, with ünïcode!"]:
        ids = tok.encode(t)
        assert all(0 <= i < tok.size for i in ids)
        assert tok.decode(ids) == t
    # merges are learned: a frequent word takes fewer tokens than its bytes
    assert len(tok.encode("the cat sat")) < len("the cat sat")
    tok.save(tmp_path / "bpe.json")
    again = BPETokenizer.load(tmp_path / "bpe.json")
    assert again.encode("the mat") == tok.encode("the mat") and again.fingerprint() == tok.fingerprint()
    assert BPETokenizer.train(list(reversed(texts)), vocab_size=300).fingerprint() == tok.fingerprint()
    with pytest.raises(UnisonoError):
        BPETokenizer.train([], vocab_size=300)


def _syl(s):
    return [ord(c) % 7 for c in s]


def test_score_round_trip_with_rests_and_long_notes():
    notes = [[60, 0.0, 0.25, "hel"], [64, 0.31, 0.6, "lo"], [67, 1.0, 4.33, "world"], [59, 4.33, 4.5, "a"]]
    toks = midi.encode_notes(notes, _syl)
    assert all(0 <= i < midi.SIZE for m, i in toks if m == "midi")
    back = midi.decode_notes(toks)
    assert [n[0] for n in back] == [60, 64, 67, 59]
    for (_p, a, b, s), (_p2, a2, b2, ph) in zip(notes, back):
        assert abs(a - a2) <= 0.0101 and abs(b - b2) <= 0.0101
        assert ph == _syl(s)  # lyric alignment: each note keeps its syllable's phones
    # a 3.33 s note needs more than one duration token; a gap becomes a rest
    assert sum(1 for m, i in toks if m == "midi" and i >= midi.DUR0) >= 6
    assert ("midi", midi.REST) in toks


def test_score_rejects_bad_notes():
    with pytest.raises(UnisonoError, match="order"):
        midi.encode_notes([[60, 1.0, 1.5, "a"], [62, 0.5, 0.8, "b"]], _syl)
    with pytest.raises(UnisonoError, match="pitch"):
        midi.encode_notes([[130, 0.0, 0.5, "a"]], _syl)
    with pytest.raises(UnisonoError, match="note must be"):
        midi.encode_notes([[60, 0.0]], _syl)


def test_score_with_given_phones_per_note():
    notes = [[60, 0.0, 0.4, "found"], [62, 0.5, 0.9, "twelve"]]
    toks = midi.encode_notes(notes, [[1, 2], [3]])
    assert [n[3] for n in midi.decode_notes(toks)] == [[1, 2], [3]]
    with pytest.raises(UnisonoError, match="2 notes"):
        midi.encode_notes(notes, [[1]])
