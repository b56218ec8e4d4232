"""Score (MIDI) tokens for singing: note pitch, duration and lyric alignment.

Local ids of the ``midi`` range (size :data:`SIZE` = 229):

- ``0..127``: note pitch (MIDI number) - a note starts;
- ``128``: rest - a silence starts;
- ``129..228``: duration of ``1..100`` steps of :data:`STEP_S` (20 ms); longer spans use several
  duration tokens whose steps add up.

A note ``(pitch, start_s, end_s, syllable)`` becomes ``[rest dur..]`` (if a gap precedes it), ``pitch
dur..``, then the phones of its syllable (ids of the ``phones`` range): the lyric alignment is
explicit, one syllable per note. Times are quantised to the 20 ms grid on absolute times, so decoding
gives every start and end within 10 ms of the input, without drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from unisono.errors import UnisonoError

STEP_S = 0.02
NUM_PITCHES = 128
REST = 128
DUR0 = 129
MAX_DUR_STEPS = 100
SIZE = DUR0 + MAX_DUR_STEPS


def _steps(seconds: float) -> int:
    return int(round(seconds / STEP_S))


def duration_tokens(steps: int) -> list[int]:
    """Duration tokens for ``steps`` (>= 1) grid steps."""
    out = []
    while steps > 0:
        s = min(steps, MAX_DUR_STEPS)
        out.append(DUR0 + s - 1)
        steps -= s
    return out


def encode_notes(notes: Iterable, phonemize_syllable: Callable[[str], list[int]] | list) -> list[tuple[str, int]]:
    """``notes`` (``[midi_pitch, start_s, end_s, syllable]``, in time order) -> ``[(modality, local_id)]``.

    ``phonemize_syllable(syllable) -> phone ids`` gives the lyric phones of one note; or pass a list
    with the phone ids of every note (e.g. taken from the lyrics' phones, one word per note).
    """
    out: list[tuple[str, int]] = []
    prev_end = 0
    notes = list(notes)
    if not callable(phonemize_syllable) and len(phonemize_syllable) != len(notes):
        raise UnisonoError(f"{len(notes)} notes but phones for {len(phonemize_syllable)} syllables")
    for idx, n in enumerate(notes):
        try:
            pitch, start, end, syllable = int(n[0]), float(n[1]), float(n[2]), str(n[3])
        except (TypeError, ValueError, IndexError):
            raise UnisonoError(f"a note must be [midi_pitch, start_s, end_s, syllable], got {n!r}") from None
        if not 0 <= pitch < NUM_PITCHES:
            raise UnisonoError(f"MIDI pitch {pitch} outside 0..127")
        s, e = _steps(start), _steps(end)
        if s < prev_end:
            raise UnisonoError(f"notes overlap or are not in time order at {start:.3f} s; sort them by start time")
        if s > prev_end:
            out.append(("midi", REST))
            out += [("midi", d) for d in duration_tokens(s - prev_end)]
        e = max(e, s + 1)
        out.append(("midi", pitch))
        out += [("midi", d) for d in duration_tokens(e - s)]
        phones = phonemize_syllable(syllable) if callable(phonemize_syllable) else phonemize_syllable[idx]
        out += [("phones", p) for p in phones]
        prev_end = e
    return out


def decode_notes(tokens: Iterable[tuple[str, int]]) -> list[tuple[int, float, float, list[int]]]:
    """Inverse of :func:`encode_notes`: ``[(pitch, start_s, end_s, syllable phone ids)]``."""
    notes: list = []
    t = 0
    cur = None  # ("note", pitch, start_steps, steps, phones) or ("rest", steps)
    def flush():
        nonlocal t
        if cur is None:
            return
        if cur[0] == "rest":
            t += cur[1]
        else:
            _, pitch, start, steps, phones = cur
            notes.append((pitch, round(start * STEP_S, 4), round((start + steps) * STEP_S, 4), phones))
            t = start + steps
    for mod, i in tokens:
        if mod == "phones":
            if cur is None or cur[0] != "note":
                raise UnisonoError("score tokens: syllable phones before any note")
            cur[4].append(int(i))
        elif i < NUM_PITCHES:
            flush()
            cur = ["note", int(i), t, 0, []]
        elif i == REST:
            flush()
            cur = ["rest", 0]
        elif DUR0 <= i < SIZE:
            if cur is None:
                raise UnisonoError("score tokens: a duration before any note or rest")
            steps = i - DUR0 + 1
            if cur[0] == "rest":
                cur[1] += steps
            else:
                cur[3] += steps
        else:
            raise UnisonoError(f"score token {i} outside 0..{SIZE - 1}")
    flush()
    return notes
