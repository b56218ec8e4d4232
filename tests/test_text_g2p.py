from unisono.text.g2p import normalize_phones, phone_list, phonemize


def test_phonemize_format():
    out = phonemize(["Hello world", "", "Hello world"])
    assert len(out) == 3 and out[1] == "" and out[0] == out[2]
    words = out[0].split(" | ")
    assert len(words) == 2
    assert "ˈ" in phone_list(out[0])  # stress marks are phones of their own
    assert all(len(p) <= 3 for p in phone_list(out[0]))


def test_normalize_phones_splits_stress():
    assert normalize_phones("w ˈɜː l d |  h ə") == "w ˈ ɜː l d | h ə"
