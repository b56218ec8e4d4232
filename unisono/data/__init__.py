"""Data: the built-in corpus generator, manifests, token shards, tokenization."""
