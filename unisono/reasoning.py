"""Reasoning tasks: text plans written from a cut's metadata, and the words a request and a caption share.

A reasoning task's target is a text *plan* followed by the audio (``docs/reasoning.md``). The plans are
written from the metadata the built-in corpus keeps (``docs/corpus.md``):

- ``plan.sound`` (scenes, single sound events, audio edits): the number of events, then each event with
  its time span in seconds and the properties the metadata holds, in time order, then the background::

      2 events: 0.4-1.3 s dog bark; 2.1-3.0 s bell; background pink noise
      1 event: 0.2-1.9 s dog bark (count 3, f0 420 Hz)

- ``plan.music``: tempo, key, instrument, contour, register, drums::

      tempo 96 BPM; key F# dorian; instrument cello; contour arch; register low; no drums

:class:`Terms` finds the sound event classes and instruments a text names (a caption, a request), out of
those a model was trained on; "generate, listen, revise" (:meth:`unisono.inference.Pipeline.generate_revised`)
compares those of the request with those of the model's caption of its own output (:meth:`Terms.agreement`).
"""

from __future__ import annotations

import re

from unisono.errors import UnisonoError

PLAN_KINDS = ("sound", "music")
# The built-in corpus pads a single sound event with this much silence on each side (seconds).
SOUND_PAD_S = 0.25


def event_display(name: str) -> str:
    """A class name as a plan writes it: ``dog_bark`` -> ``dog bark``."""
    return str(name).replace("_", " ")


def _num(v) -> str:
    f = float(v)
    return str(round(f)) if abs(f - round(f)) < 1e-9 or abs(f) >= 100 else f"{f:g}"


def _props(params: dict) -> str:
    """A sound event's own parameters as ``count 3, f0 420 Hz`` (units from the key's suffix)."""
    parts = []
    for key in sorted(params):
        if key in ("event", "start", "end"):
            continue
        v = params[key]
        if isinstance(v, bool):
            parts.append(key if v else f"not {key}")
        elif isinstance(v, (int, float)):
            for suffix, unit in (("_hz", " Hz"), ("_s", " s"), ("_db", " dB")):
                if key.endswith(suffix):
                    parts.append(f"{key[: -len(suffix)]} {_num(v)}{unit}")
                    break
            else:
                parts.append(f"{key} {_num(v)}")
        elif isinstance(v, str):
            parts.append(f"{key} {v}")
    return ", ".join(parts)


def sound_plan(events: list[dict], background: str | None = None) -> str:
    """The plan of a list of events ``{"event", "start", "end", ...}`` (seconds): ``N events: a-b s name; ...``."""
    if not events:
        raise UnisonoError("a sound plan needs at least one event")
    items = []
    for ev in sorted(events, key=lambda e: (float(e["start"]), str(e["event"]))):
        props = _props(ev)
        items.append(f"{float(ev['start']):.1f}-{float(ev['end']):.1f} s {event_display(ev['event'])}"
                     + (f" ({props})" if props else ""))
    n = len(items)
    text = f"{n} event{'s' if n != 1 else ''}: " + "; ".join(items)
    if background:
        text += f"; background {background}"
    return text


def music_plan(params: dict) -> str:
    """``tempo 96 BPM; key F# dorian; instrument cello; contour arch; register low; no drums``."""
    parts = []
    if "tempo_bpm" in params:
        parts.append(f"tempo {_num(params['tempo_bpm'])} BPM")
    if "key" in params:
        parts.append(f"key {params['key']} {params.get('mode', 'major')}")
    for key in ("instrument", "contour", "register"):
        if params.get(key):
            parts.append(f"{key} {params[key]}")
    if "drums" in params:
        parts.append("drums" if params["drums"] else "no drums")
    if not parts:
        raise UnisonoError("a music plan needs tempo, key, instrument or contour in the metadata")
    return "; ".join(parts)


def build_plan(kind: str, cut) -> str | None:
    """The plan of ``kind`` (``sound`` or ``music``) written from a corpus cut's metadata (``cut.custom``);
    None when the cut does not carry what the plan needs (the tokenizer then skips it with that reason)."""
    if kind not in PLAN_KINDS:
        raise UnisonoError(f"unknown plan kind {kind!r}; plans: {', '.join('plan.' + k for k in PLAN_KINDS)}")
    custom = getattr(cut, "custom", None) or {}
    params = custom.get("params") or {}
    if kind == "music":
        if not any(k in params for k in ("tempo_bpm", "key", "instrument", "contour")):
            return None
        return music_plan(params)
    if params.get("events"):
        return sound_plan(params["events"], params.get("background"))
    if params.get("event"):
        duration = float(getattr(cut, "duration", 0.0) or 0.0)
        start = float(params.get("start", SOUND_PAD_S if duration > 2 * SOUND_PAD_S else 0.0))
        end = float(params.get("end", max(start, duration - start)))
        return sound_plan([{**params, "start": start, "end": end}])
    return None


_PLAN_EVENT = re.compile(r"(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?) s ([a-z][a-z ]*?)\s*(?:\(|;|$)")


def parse_sound_plan(text: str) -> list[tuple[float, float, str]]:
    """The events of a sound plan, ``[(start_s, end_s, class_name)]`` in the plan's order (class names with
    underscores, as in the corpus); text that is not a plan gives an empty list."""
    return [(float(a), float(b), name.strip().replace(" ", "_")) for a, b, name in _PLAN_EVENT.findall(text or "")]


# ---------------------------------------------------------------------------- request terms
def _stem(word: str) -> str:
    w = word.lower()
    if w.endswith("ing") and len(w) > 5:
        w = w[:-3]
        if len(w) > 2 and w[-1] == w[-2]:
            w = w[:-1]
    elif w.endswith("es") and len(w) > 4 and w[-3] in "sxh":
        w = w[:-2]
    elif w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        w = w[:-1]
    return w


# extra words that name a common event class, beside the words of the class name
_EVENT_ALIASES = {"phone_ring": ("telephone",), "typing": ("type", "types", "keyboard"), "footsteps": ("step",),
                  "clapping": ("clap", "applause"), "bird_chirp": ("tweet",), "water_drip": ("dripping",)}
_GENERIC = {"someone", "sound", "ring", "rings", "ringing", "a", "the"}


class Terms:
    """The sound event classes and instruments a model was trained on (``terms.json`` beside its tokenizers,
    collected from the training corpus's metadata by :meth:`from_cuts`), and the words that name them.

    :meth:`find` gives the terms a text names (``event:dog_bark``, ``instrument:cello``); :meth:`agreement`
    compares a request's with a caption's (listen and revise)."""

    FILE = "terms.json"

    def __init__(self, events, instruments):
        self.events = sorted({str(e) for e in events})
        self.instruments = sorted({str(i).lower() for i in instruments})
        owners: dict[str, set[str]] = {}
        for name in self.events:
            for w in name.split("_") + list(_EVENT_ALIASES.get(name, ())):
                if w not in _GENERIC:
                    owners.setdefault(_stem(w), set()).add(name)
        # a word naming two classes names neither
        self._event_words = {w: next(iter(names)) for w, names in owners.items() if len(names) == 1}
        self._by_length = sorted(self.instruments, key=lambda s: (-len(s), s))

    @classmethod
    def from_cuts(cls, cuts) -> Terms:
        """The event classes (``custom.params.event`` / ``.events[].event``) and instruments
        (``custom.params.instrument``) named in the metadata of ``cuts``."""
        events, instruments = set(), set()
        for cut in cuts:
            params = (getattr(cut, "custom", None) or {}).get("params") or {}
            if params.get("event"):
                events.add(params["event"])
            events.update(e["event"] for e in params.get("events") or () if e.get("event"))
            if params.get("instrument"):
                instruments.add(params["instrument"])
        return cls(events, instruments)

    def to_dict(self) -> dict:
        return {"events": self.events, "instruments": self.instruments}

    @classmethod
    def from_dict(cls, d: dict, what: str = "terms") -> Terms:
        if not isinstance(d, dict) or set(d) != {"events", "instruments"}:
            raise UnisonoError(f"{what} must be a mapping with 'events' and 'instruments' lists")
        return cls(d["events"], d["instruments"])

    def find(self, text: str) -> set[str]:
        """The event classes (``event:dog_bark``) and instruments (``instrument:cello``) that ``text`` names."""
        t = " " + re.sub(r"[^a-z0-9#]+", " ", (text or "").lower()) + " "
        terms = set()
        for inst in self._by_length:  # longest names first: "pan flute" is not also a "flute"
            if f" {inst} " in t:
                terms.add(f"instrument:{inst}")
                t = t.replace(f" {inst} ", " ")
        for word in t.split():
            name = self._event_words.get(_stem(word))
            if name is not None:
                terms.add(f"event:{name}")
        return terms

    def agreement(self, request: str, caption: str) -> float:
        """The share of the terms named by ``request`` that ``caption`` names too (1.0 when the request names
        none: there is nothing to disagree about)."""
        want = self.find(request)
        if not want:
            return 1.0
        return len(want & self.find(caption)) / len(want)
