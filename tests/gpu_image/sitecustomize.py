"""Put this folder first on PYTHONPATH to run Python as on the lent GPU machine's image, which lacks soundfile, soxr
and lhotse (tests/test_h200_lm.py). Each is marked absent in ``sys.modules`` (None): ``import soundfile`` raises
ModuleNotFoundError, and ``importlib.util.find_spec("soundfile")`` is None, as for a package that is not installed
(transformers asks that way before it imports one)."""

import sys

MISSING = ("soundfile", "soxr", "lhotse")

for _name in MISSING:
    sys.modules[_name] = None
