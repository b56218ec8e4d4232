"""Text-side tokenizers: phones (espeak-ng), BPE, MIDI/score, text embeddings."""
