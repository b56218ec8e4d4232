"""The high-level pipeline interface: task + inputs -> audio or text.

This module holds the types every front end shares (Python API, CLI, HTTP server, web page):
:class:`TaskSpec` describes what a task takes and returns, :class:`GenerationOptions` the sampling
options, :class:`AudioOutput` / :class:`TextOutput` what comes back. A pipeline is any object with

- ``tasks: dict[str, TaskSpec]`` and ``sample_rate`` (Hz of the audio it returns);
- ``generate_batch(task, inputs: list[dict], options: GenerationOptions, cancel=None) -> list[output]``
  where each ``inputs`` dict maps an input name to ``str`` (text inputs) or
  ``(wav float32 ndarray [S], sample_rate)`` (audio inputs), and ``cancel`` is an optional
  ``threading.Event`` that, once set, makes generation stop early with :class:`GenerationCancelled`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from unisono.errors import UnisonoError

InputKind = Literal["text", "audio"]


class GenerationCancelled(UnisonoError):
    """Generation was stopped by its ``cancel`` event (a timeout or a client that went away)."""


@dataclass(frozen=True)
class TaskSpec:
    """What a task takes and gives: ``inputs`` maps each input name to ``"text"`` or ``"audio"``."""

    name: str
    description: str
    inputs: dict[str, InputKind]
    output: Literal["audio", "text"]
    optional: tuple[str, ...] = ()

    def to_json(self) -> dict:
        d = asdict(self)
        d["optional"] = list(self.optional)
        return d


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling options. ``max_duration`` in seconds of output audio (or bounds text length);
    ``guidance_scale`` 1.0 disables classifier-free guidance; ``seed`` makes sampling reproducible."""

    top_k: int = 30
    top_p: float = 1.0
    temperature: float = 1.0
    guidance_scale: float = 3.0
    seed: int = 0
    max_duration: float = 10.0

    def validate(self, max_duration_limit: float | None = None) -> "GenerationOptions":
        if self.top_k < 0:
            raise UnisonoError(f"top_k must be >= 0 (0 = no limit), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise UnisonoError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 < self.temperature <= 10.0:
            raise UnisonoError(f"temperature must be in (0, 10], got {self.temperature}")
        if not 0.0 <= self.guidance_scale <= 20.0:
            raise UnisonoError(f"guidance_scale must be in [0, 20], got {self.guidance_scale}")
        if not self.max_duration > 0:
            raise UnisonoError(f"max_duration must be positive seconds, got {self.max_duration}")
        if max_duration_limit is not None and self.max_duration > max_duration_limit:
            raise UnisonoError(f"max_duration {self.max_duration:g} s is over this server's limit of "
                               f"{max_duration_limit:g} s; ask for less")
        return self

    def with_(self, **changes) -> "GenerationOptions":
        return replace(self, **changes)


def _check_option_defaults(spec: dict, where: str) -> dict:
    """``{"audio"|"text": {GenerationOptions field: value}}`` checked (names, then values); one-line errors."""
    from dataclasses import fields

    names = {f.name for f in fields(GenerationOptions)} - {"seed"}
    if not isinstance(spec, dict) or set(spec) - {"audio", "text"}:
        raise UnisonoError(f"{where}: expected {{'audio': {{...}}, 'text': {{...}}}}, got {spec!r}")
    for kind, opts in spec.items():
        bad = sorted(set(opts or {}) - names) if isinstance(opts, dict) else [repr(opts)]
        if bad:
            raise UnisonoError(f"{where}: unknown option(s) {', '.join(bad)} for {kind}; choose from {', '.join(sorted(names))}")
        GenerationOptions(**opts).validate()
    return {k: dict(v) for k, v in spec.items() if v}


@dataclass
class AudioOutput:
    """Generated audio: ``wav`` float32 ``[S]`` at ``sample_rate`` Hz; ``plan``: the text plan a reasoning
    task wrote before the audio in the same pass (None for other tasks)."""

    wav: np.ndarray
    sample_rate: int
    task: str = ""
    info: dict = field(default_factory=dict)
    plan: str | None = None

    @property
    def duration(self) -> float:
        return self.wav.shape[-1] / self.sample_rate


@dataclass
class TextOutput:
    """Generated text (transcripts, captions, answers)."""

    text: str
    task: str = ""
    info: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ pipeline
# The shipped model's documented path (used when no checkpoint is given).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "unisono-small"
CKPT_TOKENIZERS = "tokenizers"
CKPT_CODEC = "codec"
CKPT_TEMPLATES = "tasks.yaml"
CKPT_DEFAULTS = "defaults"  # <input name>.wav: audio used for that input when a request leaves it out
CKPT_GENERATION = "generation.json"  # {"audio": {option: value}, "text": {...}}: this checkpoint's defaults
TEXT_TARGET_MAX_TOKENS = 256
PLAN_MAX_TOKENS = 128  # a reasoning task's plan is ended (forced) after this many tokens
# Tasks whose output should last about as long as their main audio input: bounded by it.
SAME_LENGTH_INPUT = {"se": "noisy", "dereverb": "reverberant", "tse": "mixture", "vc": "content",
                     "audio_edit": "original", "speech_edit": "context", "superres": "narrowband"}
# Length bounds of an audio output relative to its input (UniAudio bounds outputs by a ratio of the input):
# a task of SAME_LENGTH_INPUT makes 0.8-1.2 x its input's frames; speech from phones at least
# MIN_FRAMES_PER_PHONE frames per phone token (the end token is forbidden before) and, when no score sets
# the length (singing: 2.6-17 frames per token), at most MAX_FRAMES_PER_PHONE per token + PHONE_SLACK_FRAMES.
# The built-in corpus's TTS targets have 2.1-4.9 frames per phone token at 50 Hz (median 3.05, 1,234 examples).
SAME_LENGTH_RATIO = (0.8, 1.2)
MIN_FRAMES_PER_PHONE = 2.0
MAX_FRAMES_PER_PHONE = 6.0
PHONE_SLACK_FRAMES = 25


def until_end(frames, end_id: int):
    """Generated ``frames [T, K]`` up to (without) the first frame whose stream 0 is ``end_id``."""
    hits = (frames[:, 0] == end_id).nonzero()
    return frames[: int(hits[0, 0])] if len(hits) else frames


def target_phases(vocab, template, plan_max_tokens: int = PLAN_MAX_TOKENS):
    """The LM's generation phases (:class:`unisono.lm.model.Phase`) of a template with a plan: one per target
    segment, each with its modality's mask and end token; a plan ends (forced) after ``plan_max_tokens``.
    None for a template with one target segment."""
    from unisono.lm.model import Phase

    if not template.plan:
        return None
    out = []
    for i, seg in enumerate(template.targets):
        last = i == len(template.targets) - 1
        end = vocab.end_id(seg.modality)
        out.append(Phase(vocab.generation_mask(seg.modality), end,
                         end_frame=None if last else vocab.token_frame(end),
                         start_frame=None if i == 0 else vocab.token_frame(vocab.start_id(seg.modality)),
                         max_frames=None if last else plan_max_tokens))
    return out


def _input_name(spec) -> str:
    """The user-facing name of a condition: phones are given as text."""
    if spec.modality == "phones":
        return "text" if spec.name == "phones" else spec.name
    return spec.name


def _templates_yaml(templates: dict) -> str:
    import yaml

    def seg(s):
        d = {"name": s.name, "modality": s.modality, "source": s.source}
        if s.seconds is not None:
            d["seconds"] = s.seconds
        if s.mask_span:
            d["mask_span"] = s.mask_span
        if s.resample:
            d["resample"] = s.resample
        return d

    tasks = {}
    for name, t in sorted(templates.items()):
        d = {"description": t.description, "conditions": [seg(c) for c in t.conditions],
             "target": [seg(x) for x in t.targets] if t.plan else seg(t.target)}
        if t.cuts_from:
            d["cuts_from"] = t.cuts_from
        if t.loss != "target":
            d["loss"] = t.loss
        if t.expand:
            d["expand"] = t.expand
        if t.kinds:
            d["kinds"] = list(t.kinds)
        tasks[name] = d
    return yaml.safe_dump({"version": 1, "tasks": tasks}, sort_keys=False, allow_unicode=True)


def _copy_weights(src: Path, dst: Path, precision: str) -> None:
    """Copy a safetensors file, storing its float tensors in ``precision`` (see :mod:`unisono.weights`)."""
    import shutil

    from unisono.weights import load_weights, save_weights

    if precision == "float32":
        shutil.copy2(src, dst)
    else:
        save_weights(load_weights(src), dst, precision)


class Pipeline:
    """A trained model ready to use: ``Pipeline.from_pretrained(DIR).generate("tts", text=..., prompt=...)``.

    A checkpoint directory holds ``config.json`` + ``model.safetensors`` (the language model),
    ``vocab.json``, ``tokenizers/`` (phones, BPE, ...), ``tasks.yaml`` (the task templates it was trained
    with) and ``codec/`` (the codec, or ``codec.json`` naming a codec directory). Make one with
    :meth:`package`.
    """

    def __init__(self, lm, vocab, tokenizers, codec, templates: dict, name: str = "", language: str = "en-us"):
        self.lm, self.vocab, self.tok, self.codec, self.name, self.language = lm, vocab, tokenizers, codec, name, language
        self.lm.eval()
        self.default_inputs: dict[str, Path] = {}  # input name -> audio file used when a request omits it
        self.option_defaults: dict[str, dict] = {}  # "audio" / "text" -> GenerationOptions fields (generation.json)
        self.templates = {}
        for task, tpl in templates.items():
            if task not in vocab.tasks:
                continue
            mods = tpl.modalities
            if "semantic" in mods and tokenizers.semantic is None or "text_emb" in mods and tokenizers.text_emb is None:
                continue
            self.templates[task] = tpl
        self.tasks: dict[str, TaskSpec] = {}
        for task, tpl in sorted(self.templates.items()):
            inputs: dict[str, InputKind] = {}
            for c in tpl.conditions:
                inputs[_input_name(c)] = "audio" if c.modality in ("codec", "semantic") else "text"
                if c.mask_span:
                    inputs[f"{c.name}_span"] = "text"
            out = "audio" if tpl.target.modality == "codec" else "text"
            self.tasks[task] = TaskSpec(task, tpl.description, inputs, out)

    # -- loading and packaging ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory=None, device: str = "cpu", int8: bool = False,
                        int4: bool = False) -> "Pipeline":
        """Load a checkpoint directory (default: the shipped model at :data:`DEFAULT_CHECKPOINT`).

        ``int8=True`` quantizes the language model's weights to int8 for inference on a CPU
        (:mod:`unisono.lm.quant`: about 2x faster generation at batch 1, validation loss within 0.1 %
        on the shipped model; docs/lm.md); ``int4=True`` its transformer's linear layers to 4 bits
        (faster again; heads int8)."""
        from unisono.codec import load_codec
        from unisono.fileio import read_json
        from unisono.lm import UnisonoLM
        from unisono.tasks import load_templates
        from unisono.text.tokenizers import TokenizerSet
        from unisono.vocab import Vocab

        if directory is None:
            directory = DEFAULT_CHECKPOINT
            if not (directory / "config.json").exists():
                raise UnisonoError(f"no checkpoint given and no shipped model at {directory}; pass a checkpoint "
                                   "directory (made by `unisono train` + Pipeline.package)")
        d = Path(directory)
        if not d.is_dir():
            raise UnisonoError(f"checkpoint directory {d} does not exist")
        if int8 and int4:
            raise UnisonoError("give int8 or int4, not both")
        bits = 8 if int8 else 4 if int4 else None
        if bits and not str(device).startswith("cpu"):
            raise UnisonoError(f"int{bits} weights are for CPU inference; drop --int{bits} to run on {device}")
        for need in ("config.json", "model.safetensors", "vocab.json", CKPT_TOKENIZERS):
            if not (d / need).exists():
                raise UnisonoError(f"{d} is not a complete unisono checkpoint: {need} is missing "
                                   "(make one with Pipeline.package or `unisono train`)")
        if (d / CKPT_CODEC / "config.json").exists():
            codec_dir = d / CKPT_CODEC
        elif (d / "codec.json").exists():
            src = read_json(d / "codec.json").get("source")
            codec_dir = (d / src) if src and not Path(src).is_absolute() else Path(src or "")
            if not src or not (codec_dir / "config.json").exists():
                raise UnisonoError(f"{d}/codec.json names codec {src!r}, which is not a codec directory")
        else:
            raise UnisonoError(f"{d} has no codec/ directory and no codec.json")
        vocab = Vocab.load(d / "vocab.json")
        try:
            lm = UnisonoLM.from_pretrained(d, map_location=device)
        except UnisonoError:
            raise
        except Exception as e:  # safetensors' own errors for a truncated or tampered file
            raise UnisonoError(f"{d}/model.safetensors cannot be loaded ({str(e).splitlines()[0]}); "
                               "the file is truncated or corrupt: copy the checkpoint again") from None
        if lm.cfg.vocab_size != vocab.size or lm.cfg.num_streams != vocab.num_codebooks:
            raise UnisonoError(f"{d}: the model (V={lm.cfg.vocab_size}, K={lm.cfg.num_streams}) does not match "
                               f"vocab.json (V={vocab.size}, K={vocab.num_codebooks})")
        try:
            codec = load_codec(codec_dir, map_location=device)
        except UnisonoError:
            raise
        except Exception as e:
            raise UnisonoError(f"the codec in {codec_dir} cannot be loaded ({str(e).splitlines()[0]}); "
                               "the files are truncated or corrupt") from None
        codec.eval()
        toks = TokenizerSet.load(d / CKPT_TOKENIZERS, codec=codec)
        for key, fp in toks.fingerprints().items():
            if key in vocab.fingerprints and vocab.fingerprints[key] != fp:
                raise UnisonoError(f"{d}: tokenizers/{key} does not match vocab.json (fingerprint differs)")
        templates = load_templates([d / CKPT_TEMPLATES] if (d / CKPT_TEMPLATES).exists() else None)
        lm = lm.to(device)
        if bits:
            from unisono.lm.quant import quantize_inference

            quantize_inference(lm, bits)
        pipe = cls(lm, vocab, toks, codec, templates, name=d.name)
        if (d / CKPT_DEFAULTS).is_dir():
            pipe.default_inputs = {f.stem: f for f in sorted((d / CKPT_DEFAULTS).glob("*.wav"))}
        if (d / CKPT_GENERATION).exists():
            pipe.option_defaults = _check_option_defaults(read_json(d / CKPT_GENERATION), str(d / CKPT_GENERATION))
        return pipe

    @staticmethod
    def package(lm_dir, shards_dir, out_dir, codec_dir=None, templates: dict | None = None,
                precision: str = "float32", codec_precision: str | None = None, defaults: dict | None = None,
                generation: dict | None = None):
        """Assemble a self-contained checkpoint in ``out_dir`` from a trained LM checkpoint, the token
        shards' directory (vocab.json, tokenizers/, codec.json) and the codec (default: the one the shards
        name). ``precision`` (LM) and ``codec_precision`` (default: the same) store the float weights as
        ``float32``, ``float16`` (half the size) or ``int8`` (a quarter, one scale per row; see
        :mod:`unisono.weights`); they are loaded back into float32 models. ``defaults`` maps input names to
        audio files copied into ``defaults/`` and used when a request leaves that input out (e.g.
        ``{"prompt": "voice.wav"}``). ``generation`` (``{"audio": {"guidance_scale": 3.0}, "text": {...}}``)
        becomes the checkpoint's default sampling options for tasks with audio / text outputs
        (``generation.json``; a request's own options still win)."""
        import shutil

        from unisono.fileio import read_json, write_text
        from unisono.tasks import load_templates
        from unisono.vocab import Vocab

        lm_dir, shards_dir, out = Path(lm_dir), Path(shards_dir), Path(out_dir)
        generation = _check_option_defaults(generation or {}, "package generation")
        Vocab.load(lm_dir / "vocab.json").check_compatible(Vocab.load(shards_dir / "vocab.json"))
        if codec_dir is None:
            codec_dir = read_json(shards_dir / "codec.json").get("source")
            if not codec_dir:
                raise UnisonoError(f"{shards_dir}/codec.json names no codec directory; pass codec_dir")
        tmp = out.with_name(out.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in ("config.json", "vocab.json"):
            shutil.copy2(lm_dir / f, tmp / f)
        _copy_weights(lm_dir / "model.safetensors", tmp / "model.safetensors", precision)
        shutil.copytree(shards_dir / CKPT_TOKENIZERS, tmp / CKPT_TOKENIZERS)
        (tmp / CKPT_CODEC).mkdir()
        shutil.copy2(Path(codec_dir) / "config.json", tmp / CKPT_CODEC / "config.json")
        _copy_weights(Path(codec_dir) / "model.safetensors", tmp / CKPT_CODEC / "model.safetensors",
                      codec_precision or precision)
        if defaults:
            from unisono import audio

            (tmp / CKPT_DEFAULTS).mkdir()
            for name, src in defaults.items():
                wav, sr = audio.load(src)
                audio.save(tmp / CKPT_DEFAULTS / f"{name}.wav", wav, sr)
        write_text(tmp / CKPT_TEMPLATES, _templates_yaml(templates or load_templates()))
        if generation:
            from unisono.fileio import write_json

            write_json(tmp / CKPT_GENERATION, generation)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return out

    # -- the interface every front end uses --------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.codec.sample_rate)

    def default_options(self, task: str) -> GenerationOptions:
        """Sane per-task defaults: sampling with top-k 30 for audio, greedy decoding for text answers; then
        the checkpoint's own (``generation.json``, e.g. the guidance scale measured best for it)."""
        if task in self.tasks and self.tasks[task].output == "text":
            base = GenerationOptions(top_k=1, temperature=1.0, guidance_scale=1.0, max_duration=10.0)
            return base.with_(**self.option_defaults.get("text", {}))
        base = GenerationOptions(top_k=30, top_p=1.0, temperature=1.0, guidance_scale=1.0, max_duration=10.0)
        return base.with_(**self.option_defaults.get("audio", {}))

    def generate(self, task: str, options: GenerationOptions | None = None, cancel=None, progress=None,
                 revise: int = 0, captioner=None, **inputs):
        """Run ``task`` on one set of ``inputs`` (text: ``str``; audio: a file path, ``(wav, sample_rate)`` or
        a float array at the codec's rate). Options may also be given by name (``seed=3, top_k=50``).
        ``revise=N`` (audio tasks): generate, listen, revise, up to N more rounds (:meth:`generate_revised`)."""
        opt_names = set(GenerationOptions.__dataclass_fields__)
        overrides = {k: inputs.pop(k) for k in list(inputs) if k in opt_names}
        if task not in self.tasks:
            raise UnisonoError(f"unknown task {task!r}; this checkpoint can do: {', '.join(self.tasks)}")
        options = (options or self.default_options(task)).with_(**overrides).validate()
        if revise or captioner is not None:
            return self.generate_revised(task, inputs, options, rounds=revise, captioner=captioner, cancel=cancel,
                                         progress=progress)
        return self.generate_batch(task, [inputs], options, cancel=cancel, progress=progress)[0]

    def generate_revised(self, task: str, inputs: dict, options: GenerationOptions | None = None, rounds: int = 2,
                         captioner=None, cancel=None, progress=None) -> AudioOutput:
        """Generate, listen, revise: generate ``task``'s audio, caption it (with this checkpoint's ``caption``
        task, or ``captioner(wav float32 [S], sample_rate) -> str``), compare the event classes and
        instruments the caption names with those the request's text inputs name
        (:func:`unisono.reasoning.agreement`), and while some are missing generate again with the next seed
        (``options.seed + round``), at most ``rounds`` more times. Returns the output that agreed best (the
        earliest among equals) with ``info["revise"]``: the request's terms, and per round its seed,
        caption, agreement and plan."""
        from unisono.reasoning import agreement, request_terms

        if task not in self.tasks:
            raise UnisonoError(f"unknown task {task!r}; this checkpoint can do: {', '.join(self.tasks)}")
        spec = self.tasks[task]
        if spec.output != "audio":
            raise UnisonoError(f"task {task!r} answers with text; revise works on audio outputs")
        if not isinstance(rounds, int) or rounds < 0:
            raise UnisonoError(f"revise rounds must be an integer >= 0, got {rounds!r}")
        if captioner is None:
            if "caption" not in self.tasks:
                raise UnisonoError("revise needs a captioner: this checkpoint has no 'caption' task; pass captioner=")

            def captioner(wav, sr):
                return self.generate("caption", audio=(wav, sr), cancel=cancel).text
        options = (options or self.default_options(task)).validate()
        request = " ".join(str(v) for k, v in inputs.items() if spec.inputs.get(k) == "text" and isinstance(v, str))
        history, best, best_score = [], None, -1.0
        for r in range(rounds + 1):
            out = self.generate_batch(task, [inputs], options.with_(seed=options.seed + r), cancel=cancel,
                                      progress=progress)[0]
            caption = captioner(out.wav, out.sample_rate) if out.wav.size else ""
            score = agreement(request, caption)
            history.append({"round": r, "seed": options.seed + r, "caption": caption, "agreement": score,
                            "plan": out.plan})
            if score > best_score:
                best, best_score = out, score
                best.info["round"] = r
            if score >= 1.0:
                break
        best.info["revise"] = {"request_terms": sorted(request_terms(request)), "rounds": history}
        return best

    def generate_batch(self, task: str, inputs: list[dict], options: GenerationOptions | None = None, cancel=None,
                       progress=None):
        """Run ``task`` on several input sets; returns one output per set (same order).

        Sets whose prompts have the same length run as one batch; every row samples with its own generator
        seeded with ``options.seed``, so a row gives the same output as the same inputs run alone.
        ``cancel`` (an event) stops generation at the next frame with :class:`GenerationCancelled`;
        ``progress(frames_done, frames_max)`` is called as frames complete."""
        import torch

        if task not in self.tasks:
            raise UnisonoError(f"unknown task {task!r}; this checkpoint can do: {', '.join(self.tasks)}")
        options = (options or self.default_options(task)).validate()
        prepared = [self._prepare(task, inp, options) for inp in inputs]
        outputs = []
        # rows with equal prompt length (and length floor) run as one batch (the model takes [B, T0, K] unpadded)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault((p["prompt"].shape[0], p["min_new"]), []).append(i)
        results: dict[int, object] = {}
        for idxs in groups.values():
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("generation was cancelled")
            prompt = torch.stack([prepared[i]["prompt"] for i in idxs])
            uncond = torch.stack([prepared[i]["uncond"] for i in idxs])
            max_new = max(prepared[i]["max_new"] for i in idxs)
            on_frame = None
            if cancel is not None or progress is not None:  # a per-frame callback only when someone listens
                def on_frame(n, tokens, total=max_new):
                    if cancel is not None and cancel.is_set():
                        raise GenerationCancelled("generation was cancelled")
                    if progress is not None:
                        progress(n, total)

            new = self._sample(task, prompt, uncond, max_new, options, on_frame, prepared[idxs[0]]["min_new"])
            for row, i in enumerate(idxs):
                results[i] = self._finish(task, new[row, : prepared[i]["max_new"]])
        for i in range(len(inputs)):
            outputs.append(results[i])
        return outputs

    def generate_stream(self, task: str, inputs: dict, options: GenerationOptions | None = None, cancel=None,
                        emit=None, chunk_frames: int = 10) -> "AudioOutput":
        """Generate one audio output and hand it to ``emit(wav_chunk float32 [S])`` as its frames are decoded,
        ``chunk_frames`` frames at a time (with a causal codec, the chunks joined equal the offline decode).
        Returns the whole output. Codecs without a streaming mode decode once at the end."""
        import contextlib

        import numpy as np
        import torch

        if task not in self.tasks:
            raise UnisonoError(f"unknown task {task!r}; this checkpoint can do: {', '.join(self.tasks)}")
        if self.tasks[task].output != "audio":
            raise UnisonoError(f"task {task!r} answers with text; streaming is for audio outputs")
        options = (options or self.default_options(task)).validate()
        prep = self._prepare(task, inputs, options)
        end = self._end(task)
        plan_specs = self.templates[task].plan
        plan_ends = [self.vocab.end_id(sp.modality) for sp in plan_specs]
        plan_rows: list[list[torch.Tensor]] = [[] for _ in plan_specs]
        pending: list[torch.Tensor] = []
        chunks: list[np.ndarray] = []
        state = {"ended": False, "frames": 0, "phase": 0, "skip": 0}
        streaming = getattr(self.codec, "streaming", None)
        can_stream = streaming is not None and getattr(getattr(self.codec, "config", None), "causal", False) \
            and not getattr(getattr(self.codec, "config", None), "semantic", None)

        def flush():
            if not pending:
                return
            codes = torch.stack(pending, dim=1)[None]  # [1, K, n]
            pending.clear()
            with torch.inference_mode():
                wav = self.codec.decode(codes)[0, 0].float().cpu().numpy()
            chunks.append(wav)
            if emit is not None:
                emit(wav)

        def on_frame(n, tokens):
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("generation was cancelled")
            if state["ended"]:
                return
            row = tokens[0]
            if state["skip"]:  # the start frame of the segment after a plan
                state["skip"] -= 1
                return
            p = state["phase"]
            if p < len(plan_ends):  # still writing a plan: nothing to decode yet
                if int(row[0]) == plan_ends[p]:
                    state["phase"], state["skip"] = p + 1, 1
                else:
                    plan_rows[p].append(row.cpu())
                return
            if int(row[0]) == end:
                state["ended"] = True
                return
            pending.append(self.vocab.codec_codes(row[None].cpu())[:, 0])
            state["frames"] += 1
            if can_stream and len(pending) >= chunk_frames:
                flush()

        ctx = streaming() if can_stream else contextlib.nullcontext()
        with ctx:
            self._sample(task, prep["prompt"][None], prep["uncond"][None], prep["max_new"], options, on_frame,
                         prep["min_new"])
            flush()
        wav = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        info = {"frames": state["frames"], "ended": state["ended"], "streamed": bool(can_stream)}
        plan = None
        if plan_specs:
            plan = "\n".join(self._text(sp.modality, torch.stack(rows) if rows else torch.zeros(0, self.vocab.num_codebooks,
                                                                                              dtype=torch.long))
                              for sp, rows in zip(plan_specs, plan_rows))
            info["plan"] = plan
        return AudioOutput(np.ascontiguousarray(wav, dtype=np.float32), self.sample_rate, task, info, plan)

    # -- internals ---------------------------------------------------------------------------------
    def _sample(self, task: str, prompt, uncond, max_new: int, options: GenerationOptions, on_frame=None,
                min_new: int = 0):
        """The LM's new frames ``[B, T, K]`` for ``prompt [B, T0, K]``; every row has its own seeded generator;
        no end before ``min_new`` frames (of the output segment)."""
        import torch

        phases = self._phases(task)
        ends = {"phases": phases} if phases else {"stream_mask": self._mask(task), "end_id": self._end(task)}
        with torch.inference_mode():
            return self.lm.generate(
                prompt, max_new_frames=max_new, **ends,
                top_k=options.top_k or None, top_p=options.top_p if options.top_p < 1.0 else None,
                temperature=options.temperature, cfg_scale=options.guidance_scale,
                uncond_prompt_frames=uncond if options.guidance_scale != 1.0 else None,
                seed=[options.seed] * prompt.shape[0], on_frame=on_frame, min_new_frames=min_new)

    def _mask(self, task):
        return self.vocab.generation_mask(self.templates[task].target.modality)

    def _end(self, task):
        return self.vocab.end_id(self.templates[task].target.modality)

    def _phases(self, task):
        return target_phases(self.vocab, self.templates[task])

    def _audio(self, name: str, value):
        """Audio input -> float32 tensor [1, S] at the codec's rate."""
        import numpy as np
        import torch

        from unisono import audio as A

        if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
            wav, _ = A.load(value, sample_rate=self.sample_rate)
            return wav
        if isinstance(value, tuple) and len(value) == 2:
            wav, sr = value
            wav = A.resample(np.asarray(wav, dtype=np.float32).reshape(-1), int(sr), self.sample_rate)
            return torch.from_numpy(np.ascontiguousarray(wav))[None]
        arr = np.asarray(value, dtype=np.float32).reshape(-1)
        if arr.size == 0:
            raise UnisonoError(f"audio input {name!r} is empty")
        return torch.from_numpy(arr)[None]

    def _segment(self, spec, inputs: dict, task: str):
        import torch

        from unisono.tasks import Segment, band_limit
        from unisono.text.g2p import phonemize

        name = _input_name(spec)
        if inputs.get(name) is None and name in self.default_inputs:
            inputs = {**inputs, name: self.default_inputs[name]}
        if name not in inputs or inputs[name] is None:
            raise UnisonoError(f"task {task!r} needs the input {name!r} ({self.tasks[task].inputs[name]})")
        value = inputs[name]
        m = spec.modality
        if m in ("codec", "semantic"):
            wav = band_limit(self._audio(name, value), self.sample_rate, spec.resample)  # as in training
            if spec.seconds is not None:
                wav = wav[:, : int(spec.seconds * self.sample_rate)]
            if m == "semantic":
                return Segment("semantic", ids=self.tok.semantic.encode(wav, self.sample_rate).tolist()), wav
            with torch.inference_mode():
                codes = torch.as_tensor(self.codec.encode(wav[None]))[0, : self.vocab.num_codebooks].long()
            mask = None
            if spec.mask_span:
                span = inputs.get(f"{spec.name}_span")
                if span is None:
                    raise UnisonoError(f"task {task!r} needs {spec.name}_span: 'start,end' in seconds of the words to replace")
                try:
                    start, end = (float(x) for x in str(span).replace(" ", "").split(","))
                except ValueError:
                    raise UnisonoError(f"{spec.name}_span must be 'start,end' in seconds, got {span!r}") from None
                fr = float(self.codec.frame_rate)
                mask = torch.zeros(codes.shape[1], dtype=torch.bool)
                mask[int(start * fr) : max(int(start * fr) + 1, round(end * fr))] = True
            return Segment("codec", codes=codes, mask=mask), wav
        if not isinstance(value, str) or not value.strip():
            raise UnisonoError(f"text input {name!r} of task {task!r} is empty")
        if m == "phones":
            return Segment("phones", ids=self.tok.phones.encode(phonemize([value], self.language)[0])), None
        if m == "bpe":
            return Segment("bpe", ids=self.tok.bpe.encode(value)), None
        if m == "midi":
            import json as _json

            from unisono.text import midi

            try:
                notes = _json.loads(value)
            except ValueError:
                raise UnisonoError(f"{name!r} must be JSON notes [[midi_pitch, start_s, end_s, syllable], ...]") from None
            return Segment("midi", ids=midi.encode_notes(notes, self.tok.phonemize_syllable)), None
        if m == "text_emb":
            return Segment("text_emb", vectors=self.tok.text_emb.encode(value)), None
        raise UnisonoError(f"modality {m} cannot be an input")

    def _prepare(self, task: str, inputs: dict, options: GenerationOptions) -> dict:
        import torch

        from unisono.tasks import Segment, build_example

        tpl = self.templates[task]
        spec_inputs = self.tasks[task].inputs
        audio_names = [n for n, k in spec_inputs.items() if k == "audio"]
        if "audio" in inputs and "audio" not in spec_inputs and len(audio_names) == 1:
            inputs = {**inputs, audio_names[0]: inputs["audio"]}  # `audio` names a task's only audio input
            del inputs["audio"]
        unknown = sorted(set(inputs) - set(spec_inputs))
        if unknown:
            raise UnisonoError(f"task {task!r} does not take {unknown}; it takes {list(self.tasks[task].inputs)}")
        segs, wavs = [], {}
        for spec in tpl.conditions:
            seg, wav = self._segment(spec, inputs, task)
            segs.append(seg)
            if wav is not None:
                wavs[spec.name] = wav
        target = tpl.target
        for seg in tpl.targets:
            if seg.modality == "codec":
                segs.append(Segment("codec", codes=torch.zeros(self.vocab.num_codebooks, 0, dtype=torch.long)))
            else:
                segs.append(Segment(seg.modality, ids=[]))
        ex = build_example(self.vocab, tpl, segs)
        # the example ends with (<m_start> <m_end>) per target segment, then <end>: the prompt stops after the
        # first target's start token
        cut = 2 * len(tpl.targets)
        prompt = ex["frames"][:-cut]
        uncond = prompt.clone()
        cond = ex["cond_mask"][:-cut]
        uncond[cond] = self.vocab.pad_id
        min_new = 0
        if target.modality == "codec":
            fr = float(self.codec.frame_rate)
            max_new = int(options.max_duration * fr) + 1
            ref = SAME_LENGTH_INPUT.get(task)
            if ref in wavs:  # an output about as long as its input
                frames_in = wavs[ref].shape[-1] / self.sample_rate * fr
                max_new = min(max_new, int(frames_in * SAME_LENGTH_RATIO[1]) + 5)
                min_new = int(frames_in * SAME_LENGTH_RATIO[0])
            else:
                phones = sum(len(sg.ids) for sg, sp in zip(segs, tpl.conditions) if sp.modality == "phones")
                min_new = int(phones * MIN_FRAMES_PER_PHONE)
                sung = any(sp.modality == "midi" for sp in tpl.conditions)  # a score sets its own length
                if phones and not sung:
                    max_new = min(max_new, int(phones * MAX_FRAMES_PER_PHONE) + PHONE_SLACK_FRAMES)
        else:
            max_new = TEXT_TARGET_MAX_TOKENS
        max_new += len(tpl.plan) * (PLAN_MAX_TOKENS + 2)  # each plan, its end frame and the next start frame
        room = self._max_frames() - prompt.shape[0]
        if room < 2:
            raise UnisonoError(f"the inputs of this {task} request take {prompt.shape[0]} frames, leaving no room in "
                               f"the model's context of {self._max_frames()} frames; use shorter inputs")
        max_new = max(1, min(max_new, room))
        return {"prompt": prompt, "uncond": uncond, "max_new": max_new, "min_new": min(min_new, max_new - 1)}

    def _max_frames(self) -> int:
        """Frames (prompt + generated) that fit the model's positions, per codebook pattern."""
        cfg = self.lm.cfg
        if cfg.pattern == "flat":
            return cfg.max_seq_len // cfg.num_streams - 1
        if cfg.pattern == "delay":
            return cfg.max_seq_len - cfg.num_streams
        return cfg.max_seq_len - 1

    def _text(self, modality: str, body) -> str:
        ids = [i for i in self.vocab.to_local(modality, body[:, 0]).tolist() if i >= 0]
        return self.tok.bpe.decode(ids) if modality == "bpe" else self.tok.phones.decode(ids)

    def split_plan(self, task: str, frames):
        """``(plans, rest)``: the texts of a reasoning task's plan segments in generated ``frames [T, K]``, and
        the frames after them (those of the output segment; empty when a plan did not end)."""
        plans = []
        for seg in self.templates[task].plan:
            end = self.vocab.end_id(seg.modality)
            body = until_end(frames, end)
            plans.append(self._text(seg.modality, body))
            frames = frames[body.shape[0] + 2 :]  # the plan's end frame and the next segment's start frame
        return plans, frames

    def _finish(self, task: str, frames):
        import torch

        target = self.templates[task].target
        plans = None
        if self.templates[task].plan:
            plans, frames = self.split_plan(task, frames)
        body = until_end(frames, self._end(task))
        stop = body.shape[0]
        if target.modality == "codec":
            codes = self.vocab.codec_codes(body)[None]
            if codes.shape[-1] == 0:
                wav = torch.zeros(0)
            else:
                with torch.inference_mode():
                    wav = self.codec.decode(codes)[0, 0]
            import numpy as np

            info = {"frames": int(codes.shape[-1]), "ended": stop < frames.shape[0]}
            plan = None
            if plans is not None:
                plan = "\n".join(plans)
                info["plan"] = plan
            return AudioOutput(np.ascontiguousarray(wav.float().cpu().numpy()), self.sample_rate, task, info, plan)
        n_ids = int(body.shape[0])
        text = self._text(target.modality, body)
        info = {"tokens": n_ids, "ended": stop < frames.shape[0]}
        if plans is not None:
            info["plan"] = "\n".join(plans)
        return TextOutput(text, task, info)
