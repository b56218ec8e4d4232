"""Data: the built-in corpus generator, manifests, token shards, task sampling and batching."""
