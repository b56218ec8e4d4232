"""Training: the language-model trainer, data mixing and batching, checkpoints, logging."""
