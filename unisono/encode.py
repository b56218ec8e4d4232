"""The one segment encoder: a template segment and its value -> the segment's tokens (or vectors).

Tokenization (training examples, :mod:`unisono.data.tokenize`) and inference (prompts,
:mod:`unisono.inference.taskio`) both encode conditions here, so a prompt made at inference equals the prefix
of the training example made from the same values (tested). Where the values come from (a cut's audio, a
condition recording, another utterance of the speaker, the text) is :mod:`unisono.data.sources`' job.

Audio rule: a recording is band-limited as its segment says (``resample``), encoded whole, and its codes are
cropped to the segment's ``seconds`` from ``start`` (a frame index: a random window for training prompts,
0 otherwise). Continuous audio features (``audio_feat``) follow the same rule with the frozen feature encoder
(:mod:`unisono.features`) in place of the codec: the band-limited recording encoded whole, brought to the codec's
frame rate and cropped to the same frames. Phones are a phone string (``unisono.text.g2p.phonemize`` of a text at
inference, the corpus's phones in training); a string with too many symbols outside the inventory is refused.
"""

from __future__ import annotations

import torch

from unisono.errors import UnisonoError
from unisono.features import FeatureEncoder, to_frame_rate
from unisono.tasks import Segment, SegmentSpec, band_limit
from unisono.text import midi
from unisono.text.g2p import WORD_SEP
from unisono.vocab import Vocab

MAX_UNKNOWN_PHONES = 0.5  # a phone string with more unknown symbols than this is refused (another language?)


def span_mask(span, num_frames: int, frame_rate: float, what: str = "input") -> torch.Tensor:
    """``BoolTensor [num_frames]``: True on the frames of ``span`` = ``(start_s, end_s)`` (start floored,
    end rounded up); a one-line error when the span is malformed or covers no frame."""
    try:
        start, end = float(span[0]), float(span[1])
    except (TypeError, ValueError, IndexError):
        raise UnisonoError(f"{what}: a mask span must be (start_s, end_s) in seconds, got {span!r}") from None
    a = max(0, int(start * frame_rate))
    b = min(num_frames, int(-(-end * frame_rate // 1)))
    if b <= a:
        raise UnisonoError(f"{what}: mask span {span} covers no frame of the {num_frames / frame_rate:.2f} s input")
    mask = torch.zeros(num_frames, dtype=torch.bool)
    mask[a:b] = True
    return mask


class SegmentEncoder:
    """Encodes segment values with one checkpoint's (or tokenization run's) vocabulary, tokenizers and codec, and
    its feature encoder (``features``; None: no ``audio_feat`` condition can be encoded)."""

    def __init__(self, vocab: Vocab, tokenizers, codec, features: FeatureEncoder | None = None):
        self.vocab, self.tok, self.codec, self.features = vocab, tokenizers, codec, features
        self.sample_rate = int(codec.sample_rate)
        self.frame_rate = float(codec.frame_rate)

    def frames(self, seconds: float) -> int:
        """Codec frames in ``seconds``."""
        return int(round(seconds * self.frame_rate))

    # -- audio
    def codes(self, wav: torch.Tensor, resample: int | None = None) -> torch.Tensor:
        """``codes LongTensor [K, T]`` of ``wav [1, S]`` (float32 at the codec's rate), band-limited to
        ``resample`` Hz first when given; K = the vocabulary's codebooks."""
        wav = band_limit(wav, self.sample_rate, resample)
        dev = next(self.codec.parameters()).device if hasattr(self.codec, "parameters") else "cpu"
        with torch.inference_mode():
            codes = torch.as_tensor(self.codec.encode(wav[None].to(dev)))[0].long().cpu()
        if codes.dim() != 2 or codes.shape[0] < self.vocab.num_codebooks:
            raise UnisonoError(f"the codec gave codes of shape {tuple(codes.shape)}; the vocabulary needs "
                               f"{self.vocab.num_codebooks} codebooks")
        return codes[: self.vocab.num_codebooks].contiguous()

    def codec_segment(self, spec: SegmentSpec, codes: torch.Tensor, start: int = 0, span=None,
                      what: str = "input") -> Segment:
        """A codec segment from the whole recording's ``codes [K, T]``: cropped to ``spec.seconds`` from frame
        ``start``; ``span`` (seconds, for a ``mask_span`` segment) masks those frames."""
        if spec.seconds is not None:
            n = self.frames(spec.seconds)
            codes = codes[:, start : start + n] if codes.shape[1] > n else codes
        mask = None
        if spec.mask_span:
            if span is None:
                raise UnisonoError(f"{what}: segment {spec.name} needs a span (start_s, end_s) of the frames to mask")
            mask = span_mask(span, codes.shape[1], self.frame_rate, what)
        return Segment("codec", codes=codes, mask=mask)

    def semantic_segment(self, spec: SegmentSpec, wav: torch.Tensor, start: int = 0) -> Segment:
        """Semantic units of ``wav [1, S]``, band-limited as ``spec`` says and cropped to ``spec.seconds`` from
        sample ``start``."""
        if self.tok.semantic is None:
            raise UnisonoError("no semantic tokenizer was fitted; re-run tokenize with the vc task selected")
        wav = band_limit(wav, self.sample_rate, spec.resample)
        if spec.seconds is not None:
            n = int(round(spec.seconds * self.sample_rate))
            wav = wav[..., start : start + n] if wav.shape[-1] > n else wav
        return Segment("semantic", ids=self.tok.semantic.encode(wav, self.sample_rate).tolist())

    def audio_features(self, wav: torch.Tensor, resample: int | None = None) -> torch.Tensor:
        """``FloatTensor[T, D]`` of the whole ``wav [1, S]`` (float32 at the codec's rate): the feature encoder's
        vectors of the recording band-limited to ``resample`` Hz (when given), at the codec's frame rate."""
        if self.features is None:
            raise UnisonoError("an audio_feat segment needs a feature encoder and none is configured; give the "
                               "checkpoint's feature encoder (unisono.features)")
        wav = band_limit(wav, self.sample_rate, resample)
        return to_frame_rate(self.features.encode(wav[0], self.sample_rate), self.features.frame_rate, self.frame_rate)

    def feat_segment(self, spec: SegmentSpec, vectors: torch.Tensor, start: int = 0) -> Segment:
        """An ``audio_feat`` segment from the whole recording's ``vectors [T, D]`` (:meth:`audio_features`):
        cropped to ``spec.seconds`` from frame ``start``, as :meth:`codec_segment` crops codes."""
        if spec.seconds is not None:
            n = self.frames(spec.seconds)
            vectors = vectors[start : start + n] if vectors.shape[0] > n else vectors
        return Segment("audio_feat", vectors=vectors.float().contiguous())

    def audio_feat_segment(self, spec: SegmentSpec, wav: torch.Tensor, start: int = 0) -> Segment:
        """An ``audio_feat`` segment of ``wav [1, S]`` (float32 at the codec's rate): the feature encoder's vectors
        ``[T, D]`` of the band-limited recording at the codec's frame rate, cropped to ``spec.seconds`` from frame
        ``start`` (as :meth:`codec_segment` crops codes)."""
        if self.features is None:
            raise UnisonoError(f"segment {spec.name} is audio_feat but no feature encoder is configured; give the "
                               "checkpoint's feature encoder (unisono.features)")
        return self.feat_segment(spec, self.audio_features(wav, spec.resample), start)

    # -- text and data
    def phones_segment(self, phones: str, what: str = "input") -> Segment:
        ids = self.tok.phones.encode(str(phones))
        unknown = ids.count(self.tok.phones.unk_id)  # symbols outside the inventory encode as <unk>
        if unknown > MAX_UNKNOWN_PHONES * max(1, len(ids)):
            raise UnisonoError(f"{what}: {unknown} of {len(ids)} phones are outside the phone inventory "
                               "(another language or phone set?); phonemize it as the training corpus is")
        return Segment("phones", ids=ids)

    def midi_segment(self, notes: list, lyric_phones: str | None = None) -> Segment:
        """A score ``[[pitch, start_s, end_s, syllable], ...]``: one note per word takes that word's phones
        from ``lyric_phones`` (same voice and accent as the lyrics); otherwise espeak-ng per syllable."""
        words = [w for w in (lyric_phones or "").split(WORD_SEP) if w.strip()]
        if words and len(words) == len(notes):
            return Segment("midi", ids=midi.encode_notes(notes, [self.tok.phones.encode(w) for w in words]))
        self.tok.syllable_phones([str(n[3]) for n in notes if len(n) == 4])
        return Segment("midi", ids=midi.encode_notes(notes, self.tok.phonemize_syllable))

    def text_segment(self, spec: SegmentSpec, value, lyric_phones: str | None = None,
                     what: str = "input") -> Segment:
        """A phones, bpe, midi or text_emb segment of ``value`` (a phone string, a text, a score)."""
        m = spec.modality
        if m == "phones":
            return self.phones_segment(value, what)
        if m == "bpe":
            return Segment("bpe", ids=self.tok.bpe.encode(str(value)))
        if m == "midi":
            return self.midi_segment(value, lyric_phones)
        if m == "text_emb":
            if self.tok.text_emb is None:
                raise UnisonoError("no text encoder configured; pass --text-encoder DIR")
            return Segment("text_emb", vectors=self.tok.text_emb.encode(str(value)))
        raise UnisonoError(f"modality {m} is not a text or data modality")
