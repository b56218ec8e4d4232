"""Data: corpus synthesis, manifests, token shards, tokenization."""
