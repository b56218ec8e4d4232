"""Small attribute classifiers (instrument, sound event class) trained only on reference audio of a corpus.

Features: the 128-d mel-statistics embedding of :mod:`unisono.eval.metrics.frechet`, standardised.
Model: multinomial logistic regression with L2 weight decay, fitted by full-batch L-BFGS from zeros
(deterministic). Saved as ``NAME.safetensors`` (``weight [C, D]``, ``bias [C]``, ``mean [D]``, ``std [D]``)
plus ``NAME.json`` (class names, feature description, training provenance).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from unisono.errors import UnisonoError
from unisono.eval.metrics.frechet import EMBEDDING_NAME, mel_stats_embedding
from unisono.fileio import atomic_path, read_json, write_json

_REGISTRY: dict[str, AttributeClassifier] = {}


class AttributeClassifier:
    """Logistic regression over standardised mel-statistics features: ``predict(wav, sample_rate) -> label``."""

    def __init__(self, classes: list[str], weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, info: dict | None = None):
        self.classes, self.weight, self.bias, self.mean, self.std = list(classes), weight, bias, mean, std
        self.info = info or {}

    @classmethod
    def fit(cls, features: np.ndarray, labels: list[str], weight_decay: float = 1e-2, steps: int = 200,
            info: dict | None = None) -> AttributeClassifier:
        """Fit on ``features [N, D]`` with string ``labels`` (at least two classes)."""
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise UnisonoError(f"a classifier needs at least two classes in its training data, got {classes}")
        x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
        xs = (x - mean) / std
        y = torch.tensor([classes.index(lab) for lab in labels])
        w = torch.zeros(len(classes), x.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xs @ w.T + b, y) + weight_decay * (w**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        clf = cls(classes, w.detach().float(), b.detach().float(), mean.float(), std.float(), info)
        clf.info["train_accuracy"] = float(np.mean([clf.classes[i] == lab for i, lab in
                                                    zip(clf._argmax(np.asarray(features)), labels)]))
        clf.info["n_train"] = len(labels)
        return clf

    def _argmax(self, features: np.ndarray) -> np.ndarray:
        x = (torch.as_tensor(features, dtype=torch.float32) - self.mean) / self.std
        return (x @ self.weight.T + self.bias).argmax(-1).numpy()

    def predict_features(self, features: np.ndarray) -> list[str]:
        """Labels for ``features [N, D]``."""
        return [self.classes[i] for i in self._argmax(np.atleast_2d(features))]

    def predict(self, wav, sample_rate: int) -> str:
        return self.predict_features(mel_stats_embedding(wav, sample_rate)[None])[0]

    def save(self, directory: str | Path, name: str) -> Path:
        directory = Path(directory)
        with atomic_path(directory / f"{name}.safetensors") as tmp:
            save_file({"weight": self.weight.contiguous(), "bias": self.bias, "mean": self.mean, "std": self.std},
                      str(tmp))
        write_json(directory / f"{name}.json", {"classes": self.classes, "features": EMBEDDING_NAME, **self.info})
        return directory / f"{name}.safetensors"

    @classmethod
    def load(cls, directory: str | Path, name: str) -> AttributeClassifier:
        directory = Path(directory)
        path = directory / f"{name}.safetensors"
        if not path.exists():
            raise UnisonoError(f"no classifier {path}; train one with unisono.eval.corpus.train_attribute_classifiers")
        t = load_file(str(path))
        meta = read_json(directory / f"{name}.json")
        classes = meta.pop("classes")
        if t["weight"].shape[0] != len(classes):
            raise UnisonoError(f"{path} has {t['weight'].shape[0]} classes but its json lists {len(classes)}")
        meta.pop("features", None)
        return cls(classes, t["weight"], t["bias"], t["mean"], t["std"], meta)


def register_classifier(attribute: str, clf: AttributeClassifier | None) -> None:
    """Make ``clf`` the classifier the ``attribute`` metric (``instrument`` or ``event``) uses in this process
    (None: forget the one registered)."""
    if clf is None:
        _REGISTRY.pop(attribute, None)
    else:
        _REGISTRY[attribute] = clf


def get_classifier(attribute: str) -> AttributeClassifier:
    if attribute not in _REGISTRY:
        raise UnisonoError(f"metric {attribute} needs a classifier trained on reference audio; in corpus mode it is "
                           "trained from the corpus's train split (see docs/eval.md)")
    return _REGISTRY[attribute]
