"""Each task in plain words, for people (the web page) and for API readers (the OpenAPI description).

:data:`GUIDE` gives a task a plain name (``title``), what it does (``summary``), what each input is
(``inputs``) and a ready example of its text inputs (``example``). A task it does not know (a checkpoint's
own template) keeps its id and its template's description, and its inputs get a generic line.
"""

from __future__ import annotations

from unisono.inference import TaskSpec

VOICE = "A few seconds (3-10 s) of one person speaking, alone; the output takes on this voice."
SPEECH = "A recording of speech (WAV, FLAC or OGG)."

GUIDE: dict[str, dict] = {
    "tts": {
        "title": "Text to speech",
        "summary": "Reads your text aloud in the voice of a short recording.",
        "inputs": {"text": "The words to say, in English.", "prompt": VOICE},
        "example": {"text": "The old baker slowly painted the red door."},
    },
    "instruct_tts": {
        "title": "Text to speech, voice from a description",
        "summary": "Reads your text aloud in a voice you describe in words.",
        "inputs": {"text": "The words to say, in English.",
                   "instruction": "The voice: speed, pitch, gender and accent."},
        "example": {"text": "The old baker slowly painted the red door.",
                    "instruction": "A slow, low-pitched female voice with an American accent."},
    },
    "vc": {
        "title": "Voice conversion",
        "summary": "Says what one recording says, in the voice of another.",
        "inputs": {"content": "The recording whose words to keep.", "prompt": VOICE},
        "example": {},
    },
    "speech_edit": {
        "title": "Change words in a recording",
        "summary": "Replaces some words of a recording and keeps the voice and the rest of it.",
        "inputs": {"text": "The whole new sentence, as it should sound.",
                   "context": "The original recording.",
                   "context_span": "Where the words to replace are, in seconds: start,end (e.g. 0.8,1.4)."},
        "example": {"text": "The old baker quickly painted the red door.", "context_span": "0.8,1.4"},
    },
    "svs": {
        "title": "Singing",
        "summary": "Sings lyrics to a melody, in the voice of a short recording.",
        "inputs": {"lyrics": "The words to sing (the score gives each note its syllable).",
                   "score": "The melody as JSON notes [[midi_pitch, start_s, end_s, \"syllable\"], ...] "
                            "(60 is middle C).",
                   "prompt": VOICE},
        "example": {"lyrics": "la da", "score": "[[60, 0.0, 0.4, \"la\"], [62, 0.4, 0.8, \"da\"]]"},
    },
    "se": {
        "title": "Remove noise from speech",
        "summary": "Keeps the voice and takes away the background noise.",
        "inputs": {"noisy": "Speech recorded with background noise."},
        "example": {},
    },
    "dereverb": {
        "title": "Remove room echo from speech",
        "summary": "Makes speech recorded in an echoing room sound close and dry.",
        "inputs": {"reverberant": "Speech recorded in a room with echo."},
        "example": {},
    },
    "tse": {
        "title": "Pick out one speaker",
        "summary": "Keeps one person's voice from a recording where several people talk at once.",
        "inputs": {"mixture": "The recording of several people talking.",
                   "enrollment": "A few seconds of the person to keep, speaking alone."},
        "example": {},
    },
    "text_to_sound": {
        "title": "Sound from a description",
        "summary": "Makes a sound or a scene of sounds that matches your words.",
        "inputs": {"caption": "What you want to hear, and when (times in seconds)."},
        "example": {"caption": "A dog barks at 0.5 s, then a bell rings at 1.5 s."},
    },
    "text_to_sound_reasoning": {
        "title": "Sound from a description, planned first",
        "summary": "Writes a plan of timed sound events, then makes the sound: follows timing more closely.",
        "inputs": {"caption": "What you want to hear, and when (times in seconds)."},
        "example": {"caption": "A dog barks at 0.5 s, then a bell rings at 1.5 s."},
    },
    "text_to_music": {
        "title": "Music from a description",
        "summary": "Makes a short piece of music that matches your words.",
        "inputs": {"caption": "The music: instrument, mood, key and tempo."},
        "example": {"caption": "A calm rising melody in C major played on the piano at 90 BPM."},
    },
    "text_to_music_reasoning": {
        "title": "Music from a description, planned first",
        "summary": "Writes a plan (tempo, key, instrument, melody shape), then makes the music.",
        "inputs": {"caption": "The music: instrument, mood, key and tempo."},
        "example": {"caption": "A calm rising melody in C major played on the piano at 90 BPM."},
    },
    "audio_edit": {
        "title": "Edit a sound scene",
        "summary": "Adds or removes a sound in a recording, as you ask.",
        "inputs": {"instruction": "What to change, and where (seconds).",
                   "original": "The recording to change."},
        "example": {"instruction": "Add the sound of a dog barking at 1.0 seconds."},
    },
    "asr": {
        "title": "Speech to text",
        "summary": "Writes down what is said in a recording.",
        "inputs": {"speech": SPEECH},
        "example": {},
    },
    "caption": {
        "title": "Describe a sound",
        "summary": "Writes a sentence about what can be heard in a recording of sounds or music.",
        "inputs": {"audio": "A recording of sounds or music."},
        "example": {},
    },
    "audio_qa": {
        "title": "Ask about a recording",
        "summary": "Answers a question about a recording.",
        "inputs": {"audio": "The recording to ask about.", "question": "Your question about it."},
        "example": {"question": "Is the speaker male or female?"},
    },
}


def task_guide(spec: TaskSpec) -> dict:
    """``{"title", "summary", "inputs": {name: help}, "example": {name: text}}`` for ``spec``: every input of the
    task has a help line, the example fills only inputs the task has."""
    known = GUIDE.get(spec.name, {})
    helps = {}
    for name, kind in spec.inputs.items():
        generic = "Text." if kind == "text" else "An audio file (WAV, FLAC or OGG)."
        if name.endswith("_span"):
            generic = "Where, in seconds: start,end (e.g. 0.8,1.4)."
        helps[name] = known.get("inputs", {}).get(name, generic)
    example = {k: v for k, v in known.get("example", {}).items() if k in spec.inputs}
    return {"title": known.get("title", spec.name), "summary": known.get("summary", spec.description),
            "inputs": helps, "example": example}
