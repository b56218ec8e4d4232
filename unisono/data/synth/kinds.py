"""One maker per kind of corpus item. A maker turns a seeded job into one or more cuts.

A maker returns a list of :class:`Made` (one per cut): the primary audio, the condition audio by role,
the text, phones source, speaker, tasks and metadata. Writing files and manifests is done by
:mod:`.build`, so makers only compute.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unisono.audio import normalize_loudness

from . import effects, music, sounds
from . import text as T
from . import voices as V
from .sounds import NUMBER_WORDS

SAMPLE_RATE = 16000
SPEECH_DB = -23.0  # RMS level (dBFS) of clean speech and music


@dataclass
class Made:
    suffix: str  # appended to the job id to make the cut id ("" for one cut per job)
    kind: str
    tasks: list[str]
    audio: np.ndarray  # primary audio [S] float32 at SAMPLE_RATE
    text: str = ""  # transcript, lyrics or caption (the supervision text)
    speaker: str | None = None
    phones_text: str | None = None  # text to phonemize for the supervision's phones
    phones_language: str = "en-us"
    roles: dict[str, np.ndarray] = field(default_factory=dict)
    caption: str | None = None
    instruction: str | None = None
    qa: list[list[str]] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    midi: tuple[dict, list] | None = None  # (music params, notes) to write as a MIDI file


@dataclass
class Job:
    id: str
    kind: str
    split: str
    seed: int


def _lang(voice_id: str) -> str:
    return V.VOICES_BY_ID[voice_id].lang


def _speech_qa(params: dict) -> list[list[str]]:
    speed = {"slow": "slow", "fast": "fast"}.get(V.speed_word(params["speed"]), "moderate")
    return [
        ["Is the speaker male or female?", params["gender"]],
        ["What accent does the speaker have?", params["accent"]],
        ["Is the speech slow, moderate or fast?", speed],
        ["Is the voice low, medium or high pitched?", V.pitch_word(params["pitch"]).split("-")[0]],
    ]


def _say(rng, split, voice, wide=False):
    sent = T.render(T.sentence_for_split(rng, split))
    params = V.utterance_params(voice, rng, wide=wide)
    return sent, params, normalize_loudness(V.speak(sent, params, SAMPLE_RATE), SPEECH_DB)


def make_speech(job: Job, rng: np.random.Generator) -> list[Made]:
    """Two utterances of one voice (so every voice has a prompt from another utterance)."""
    voice = V.pick_voice(rng, job.split)
    out = []
    for suffix in ("-a", "-b"):
        sent, params, x = _say(rng, job.split, voice, wide=rng.random() < 0.3)
        desc = V.describe(params, rng)
        out.append(Made(suffix, "speech", ["tts", "asr", "instruct_tts", "audio_qa"], x, sent, voice.id, sent,
                        _lang(voice.id), caption=desc, instruction=desc, qa=_speech_qa(params), params=params))
    return out


def make_noisy(job: Job, rng: np.random.Generator) -> list[Made]:
    voice = V.pick_voice(rng, job.split)
    sent, params, clean = _say(rng, job.split, voice)
    kind = effects.NOISE_TYPES[int(rng.integers(len(effects.NOISE_TYPES)))]
    if kind == "babble":
        parts = []
        for _ in range(3):
            other = V.pick_voice(rng, job.split, exclude=(voice.id,))
            parts.append(effects.fit_length(_say(rng, job.split, other)[2], clean.size))
        noise = np.sum(parts, axis=0)
    elif kind == "hum":
        noise = effects.hum(clean.size, SAMPLE_RATE, rng)
    else:
        noise = effects.coloured_noise(kind, clean.size, rng)
    snr = float(rng.choice([-5, 0, 5, 10, 15, 20]))
    noisy, _ = effects.mix_at_snr(clean, noise, snr)
    clean, noisy = effects.peak_safe(clean, noisy)
    return [Made("", "noisy", ["se"], clean, sent, voice.id, sent, _lang(voice.id), roles={"noisy": noisy},
                 caption=f"Speech with {kind} noise at {snr:g} dB SNR.",
                 params={**params, "noise": kind, "snr_db": snr})]


def make_reverb(job: Job, rng: np.random.Generator) -> list[Made]:
    voice = V.pick_voice(rng, job.split)
    sent, params, clean = _say(rng, job.split, voice)
    room = sorted(effects.ROOMS)[int(rng.integers(len(effects.ROOMS)))]
    wet, dry = effects.reverberate(clean, SAMPLE_RATE, room)
    dry, wet = effects.peak_safe(dry, wet)
    return [Made("", "reverb", ["dereverb"], dry, sent, voice.id, sent, _lang(voice.id), roles={"reverberant": wet},
                 caption=f"Speech in a {room} room.",
                 params={**params, "room": room, "reverberance": effects.ROOMS[room][0]})]


def make_mixture(job: Job, rng: np.random.Generator) -> list[Made]:
    voice = V.pick_voice(rng, job.split)
    other = V.pick_voice(rng, job.split, exclude=(voice.id,))
    sent, params, target = _say(rng, job.split, voice)
    _, oparams, interferer = _say(rng, job.split, other)
    _, _, enrollment = _say(rng, job.split, voice)
    n = max(target.size, interferer.size)
    target = np.pad(target, (0, n - target.size))
    sir = float(rng.uniform(-5, 5))
    mixture, _ = effects.mix_at_snr(target, np.pad(interferer, (0, n - interferer.size)), sir)
    target, mixture = effects.peak_safe(target, mixture)
    return [Made("", "mixture", ["tse"], target, sent, voice.id, sent, _lang(voice.id),
                 roles={"mixture": mixture, "enrollment": enrollment},
                 params={**params, "interferer_voice": oparams["voice"], "sir_db": round(sir, 2)})]


def make_vc_pair(job: Job, rng: np.random.Generator) -> list[Made]:
    target_voice = V.pick_voice(rng, job.split)
    source_voice = V.pick_voice(rng, job.split, exclude=(target_voice.id,))
    sent = T.render(T.sentence_for_split(rng, job.split))
    tparams = V.utterance_params(target_voice, rng)
    sparams = V.utterance_params(source_voice, rng)
    target = normalize_loudness(V.speak(sent, tparams, SAMPLE_RATE), SPEECH_DB)
    source = normalize_loudness(V.speak(sent, sparams, SAMPLE_RATE), SPEECH_DB)
    _, _, prompt = _say(rng, job.split, target_voice)  # another utterance of the target voice
    return [Made("", "vc_pair", ["vc"], target, sent, target_voice.id, sent, _lang(target_voice.id),
                 roles={"source": source, "prompt": prompt}, params={**tparams, "source_voice": source_voice.id})]


def _segments(sentence: list, positions: list[int]) -> list[tuple[str, bool]]:
    """Split a sentence into text runs, marking the runs that are replaced words."""
    runs, cur = [], []
    for i, w in enumerate(sentence):
        if i in positions:
            if cur:
                runs.append((cur, False))
                cur = []
            runs.append(([w], True))
        else:
            cur.append(w)
    if cur:
        runs.append((cur, False))
    return [(" ".join(x.text for x in ws), edited) for ws, edited in runs]


def make_speech_edit(job: Job, rng: np.random.Generator) -> list[Made]:
    voice = V.pick_voice(rng, job.split)
    params = V.utterance_params(voice, rng)
    while True:
        sentence = T.sentence_for_split(rng, job.split)
        res = T.replace_words(sentence, rng, int(rng.integers(1, 3)), job.split)
        if res is not None:
            break
    new_sentence, positions, pairs = res
    gap = np.zeros(int(0.06 * SAMPLE_RATE), dtype=np.float32)
    cache: dict[str, np.ndarray] = {}

    def speak_runs(sent):
        pieces, spans, t = [], [], 0
        for run, edited in _segments(sent, positions):
            if run not in cache:
                cache[run] = V.speak(run, params, SAMPLE_RATE)
            x = cache[run]
            if edited:
                spans.append((t, t + x.size))
            pieces += [x, gap]
            t += x.size + gap.size
        audio = np.concatenate(pieces[:-1])
        span = [round(spans[0][0] / SAMPLE_RATE, 4), round(spans[-1][1] / SAMPLE_RATE, 4)]
        return audio, span

    original, original_span = speak_runs(sentence)
    edited, edit_span = speak_runs(new_sentence)
    if params["engine"] != "espeak":  # heard on the whole edited sentence, not on its first run of words
        V.measure_heard(params, T.render(new_sentence), edited, SAMPLE_RATE)
    gain = 10 ** ((SPEECH_DB - 20 * np.log10(effects.rms(original) + 1e-9)) / 20)
    edited, original = effects.peak_safe(edited * gain, original * gain)
    new_text, old_text = T.render(new_sentence), T.render(sentence)
    return [Made("", "speech_edit", ["speech_edit"], edited, new_text, voice.id, new_text, _lang(voice.id),
                 roles={"original": original},
                 params={**params, "original_text": old_text, "edited_words": [list(p) for p in pairs],
                         "edit_span": edit_span, "original_span": original_span})]


def make_singing(job: Job, rng: np.random.Generator) -> list[Made]:
    voice = V.pick_voice(rng, job.split, engines_allowed=("espeak",))  # only espeak-ng sings (sox-shifted syllables)
    params = V.utterance_params(voice, rng)
    words = [w.text.rstrip(".?").lower() for w in T.sentence_for_split(rng, job.split)]
    words = words[: int(rng.integers(4, 9))]
    notes, mparams = music.singing_notes(words, rng, voice.gender)
    x = normalize_loudness(V.sing(notes, params, SAMPLE_RATE), SPEECH_DB)
    _, _, prompt = _say(rng, job.split, voice)  # the same voice speaking another sentence
    lyrics = " ".join(words)
    mparams_all = {**params, **mparams, "notes": notes}
    cap = f"A {mparams['mood']} song sung by a {voice.gender} voice in {mparams['mode']} at {mparams['tempo_bpm']} BPM."
    return [Made("", "singing", ["svs"], x, lyrics, voice.id, lyrics, _lang(voice.id), caption=cap,
                 roles={"prompt": prompt},
                 params=mparams_all, midi=({"program": 52, "tempo_bpm": mparams["tempo_bpm"], "drums": False},
                                           [(n[0], n[1], n[2]) for n in notes]))]


def make_music(job: Job, rng: np.random.Generator) -> list[Made]:
    params = music.sample_params(rng, job.split)
    notes = music.melody(params, rng)
    cap = music.caption(params, rng)
    qa = [
        ["What instrument is playing?", params["instrument"]],
        ["Is the tempo slow, moderate or fast?", music.tempo_word(params["tempo_bpm"])],
        ["What is the mood of the music?", params["mood"]],
        ["Are there drums?", "yes" if params["drums"] else "no"],
        ["What key is the music in?", f"{params['key']} {params['mode']}"],
    ]
    # the audio is rendered by build.py from the MIDI file it writes (FluidSynth reads files)
    return [Made("", "music", ["text_to_music", "caption", "audio_qa"], np.zeros(0, np.float32), cap,
                 caption=cap, qa=qa, params=params, midi=(params, notes))]


def make_sound(job: Job, rng: np.random.Generator) -> list[Made]:
    names = sounds.event_names()
    name = names[int(rng.integers(len(names)))]
    x, params, phrase = sounds.make_event(name, rng, SAMPLE_RATE)
    pad = np.zeros(int(0.25 * SAMPLE_RATE), dtype=np.float32)
    x = np.concatenate([pad, x, pad])
    cap = sounds.caption_event(phrase, x.size / SAMPLE_RATE, rng)
    qa = [["What is making this sound?", phrase]]
    if "count" in params:
        qa.append(["How many times does it sound?", NUMBER_WORDS[params["count"]]])
    return [Made("", "sound", ["text_to_sound", "caption", "audio_qa"], x, cap, caption=cap, qa=qa, params=params)]


def _scene_events(rng, n_events: int, duration: float, exclude: set[str] = frozenset()):
    names = [n for n in sounds.event_names() if n not in exclude]
    chosen = [names[i] for i in rng.choice(len(names), size=n_events, replace=False)]
    events = []
    for name in chosen:
        x, params, _ = sounds.make_event(name, rng, SAMPLE_RATE, level_db=float(rng.uniform(-26, -18)))
        x = x[: int(min(x.size / SAMPLE_RATE, duration * 0.6) * SAMPLE_RATE)]
        start = round(float(rng.uniform(0.1, max(0.2, duration - x.size / SAMPLE_RATE - 0.1))), 1)
        events.append({"event": name, "start": start, "end": round(start + x.size / SAMPLE_RATE, 2), "audio": x})
    return sorted(events, key=lambda e: e["start"])


def _scene_qa(events):
    first, last = events[0]["event"], events[-1]["event"]
    return [
        ["How many sound events are there?", NUMBER_WORDS[len(events)]],
        ["What happens first?", sounds.scene_phrase(first)],
        ["What happens last?", sounds.scene_phrase(last)],
    ]


def make_scene(job: Job, rng: np.random.Generator) -> list[Made]:
    duration = float(rng.uniform(4.0, 6.0))
    background = ("silence", "pink noise", "brown noise")[int(rng.integers(3))]
    events = _scene_events(rng, int(rng.integers(1, 4)), duration)
    (x,) = effects.peak_safe(sounds.render_scene(events, SAMPLE_RATE, duration, background, rng))
    cap = sounds.scene_caption(events, background)
    meta = [{k: e[k] for k in ("event", "start", "end")} for e in events]
    return [Made("", "scene", ["text_to_sound", "caption", "audio_qa"], x, cap, caption=cap, qa=_scene_qa(events),
                 params={"events": meta, "background": background})]


def make_audio_edit(job: Job, rng: np.random.Generator) -> list[Made]:
    duration = float(rng.uniform(4.0, 6.0))
    background = ("silence", "pink noise", "brown noise")[int(rng.integers(3))]
    n_full = int(rng.integers(2, 4))
    events = _scene_events(rng, n_full, duration)
    k = int(rng.integers(n_full))
    fewer = [e for i, e in enumerate(events) if i != k]
    edit = "add" if rng.random() < 0.5 else "remove"
    bg_seed = int(rng.integers(2**31))
    render = lambda evs: sounds.render_scene(evs, SAMPLE_RATE, duration, background, np.random.default_rng(bg_seed))  # noqa: E731
    before, after = (render(fewer), render(events)) if edit == "add" else (render(events), render(fewer))
    before, after = effects.peak_safe(before, after)
    ev = events[k]
    display = ev["event"].replace("_", " ")
    if edit == "add":
        instruction = f"Add the sound of {display} at {ev['start']:.1f} seconds."
    else:
        instruction = f"Remove the sound of {display}."
    after_events = events if edit == "add" else fewer
    meta = [{k2: e[k2] for k2 in ("event", "start", "end")} for e in after_events]
    return [Made("", "audio_edit", ["audio_edit"], after, sounds.scene_caption(after_events, background),
                 roles={"original": before}, caption=sounds.scene_caption(after_events, background),
                 instruction=instruction,
                 params={"events": meta, "background": background, "edit": edit, "edited_event": ev["event"]})]


MAKERS = {
    "speech": make_speech, "noisy": make_noisy, "reverb": make_reverb, "mixture": make_mixture,
    "vc_pair": make_vc_pair, "speech_edit": make_speech_edit, "singing": make_singing, "music": make_music,
    "sound": make_sound, "scene": make_scene, "audio_edit": make_audio_edit,
}
# Share of the corpus's primary audio (by duration) and the expected primary seconds per job.
SHARES = {
    "speech": (0.24, 5.6), "noisy": (0.08, 2.8), "reverb": (0.08, 3.6), "mixture": (0.08, 3.2),
    "vc_pair": (0.08, 2.8), "speech_edit": (0.06, 3.0), "singing": (0.08, 3.5), "music": (0.14, 5.5),
    "sound": (0.05, 2.8), "scene": (0.06, 5.0), "audio_edit": (0.05, 5.0),
}
