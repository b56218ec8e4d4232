"""Streaming generation: audio handed out in chunks as its frames are sampled.

With a causal codec that has a streaming mode, every ``chunk_frames`` generated frames are decoded and
emitted at once (the chunks joined equal the offline decode); other codecs decode once at the end. A
reasoning task's plan frames are collected (not decoded) and returned as text with the audio. With the
pipeline's enhancer loaded, each decoded chunk goes through an :class:`unisono.codec.enhance.EnhancerStream`
and what is emitted is its 48 kHz stereo output ``[C, n]`` (final as soon as emitted; it lags the decode by at
most the stream's window, 1 s): the joined chunks equal the offline enhancement of the whole decode.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from unisono.errors import UnisonoError
from unisono.inference.types import AudioOutput, GenerationCancelled


@dataclass
class _StreamState:
    """Where a stream is: ``phase`` (index of the plan being written; = number of plans once in the audio),
    ``skip`` (frames still to drop: the start frame after a plan), the frames of each plan, the codes not yet
    decoded, the decoded chunks."""

    plan_ends: list[int]
    end_id: int
    phase: int = 0
    skip: int = 0
    ended: bool = False
    frames: int = 0
    plan_rows: list[list[torch.Tensor]] = field(default_factory=list)
    pending: list[torch.Tensor] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)


def _can_stream(codec) -> bool:
    cfg = getattr(codec, "config", None)
    return getattr(codec, "streaming", None) is not None and getattr(cfg, "causal", False) \
        and not getattr(cfg, "semantic", None)


def generate_stream(pipe, task: str, inputs: dict, options=None, cancel=None, emit=None,
                    chunk_frames: int = 10) -> AudioOutput:
    """Generate one audio output of ``task`` and hand it to ``emit(wav_chunk float32 [S])`` (``[C, S]`` at the
    enhancer's rate with one loaded) as its frames are decoded, ``chunk_frames`` frames at a time. Returns the
    whole output (``info["streamed"]``: whether it was decoded in chunks)."""
    io = pipe.io(task)
    if io.template.output != "audio":
        raise UnisonoError(f"task {task!r} answers with text; streaming is for audio outputs")
    options = (options or pipe.default_options(task)).validate()
    prep = io.prepare(inputs, options)
    vocab, codec = io.vocab, io.codec
    st = _StreamState([vocab.end_id(sp.modality) for sp in io.template.plan],
                      vocab.end_id(io.template.target.modality))
    st.plan_rows = [[] for _ in st.plan_ends]
    can_stream = _can_stream(codec)
    enhancer = getattr(pipe, "enhancer", None)
    enh = enhancer.stream() if enhancer is not None else None

    def send(wav: np.ndarray) -> None:  # a decoded (and, with an enhancer, enhanced) chunk out
        st.chunks.append(wav)
        if emit is not None and wav.shape[-1]:
            emit(wav)

    def flush():
        if not st.pending:
            return
        codes = torch.stack(st.pending, dim=1)  # [K, n]
        st.pending.clear()
        wav = io.codec_decode(codes)
        send(enh.feed(wav).numpy() if enh is not None else wav)

    def on_frame(n, tokens):
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled("generation was cancelled")
        row = tokens[0]
        if st.ended:
            return
        if st.skip:  # the start frame of the segment after a plan
            st.skip -= 1
            return
        if st.phase < len(st.plan_ends):  # still writing a plan: nothing to decode yet
            if int(row[0]) == st.plan_ends[st.phase]:
                st.phase, st.skip = st.phase + 1, 1
            else:
                st.plan_rows[st.phase].append(row.cpu())
            return
        if int(row[0]) == st.end_id:
            st.ended = True
            return
        st.pending.append(vocab.codec_codes(row[None].cpu())[:, 0])
        st.frames += 1
        if can_stream and len(st.pending) >= chunk_frames:
            flush()

    with codec.streaming() if can_stream else contextlib.nullcontext():
        io.sample([prep], options, on_frame=on_frame)
        flush()
    if enh is not None:
        send(enh.finish().numpy())
    empty = np.zeros((enhancer.config.channels, 0) if enh is not None else 0, np.float32)
    wav = np.concatenate(st.chunks, axis=-1) if st.chunks else empty
    info = {"frames": st.frames, "ended": st.ended, "streamed": bool(can_stream)}
    if enh is not None:
        info["enhanced"] = True
    plan = None
    if io.template.plan:
        empty = torch.zeros(0, vocab.num_codebooks, dtype=torch.long)
        plan = "\n".join(io.text(sp.modality, torch.stack(rows) if rows else empty)
                         for sp, rows in zip(io.template.plan, st.plan_rows))
        info["plan"] = plan
    rate = enhancer.config.out_rate if enh is not None else io.sample_rate
    return AudioOutput(np.ascontiguousarray(wav, dtype=np.float32), rate, task, info, plan)
