"""Put this folder first on PYTHONPATH to run Python as on the lent GPU machine's image, which lacks soundfile, soxr
and lhotse: importing any of them raises ImportError (tests/test_h200_lm.py)."""

import importlib.abc
import sys

MISSING = frozenset({"soundfile", "soxr", "lhotse"})


class _NotOnTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in MISSING:
            raise ImportError(f"{name} is not on the GPU image (tests/gpu_image/sitecustomize.py)")
        return None


sys.meta_path.insert(0, _NotOnTheImage())
