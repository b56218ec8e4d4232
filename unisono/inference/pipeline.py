"""The pipeline: a checkpoint ready to use, ``task + inputs -> audio or text``.

``Pipeline.from_pretrained(DIR).generate("tts", text=..., prompt=...)``. Each task's inputs, prompt, sampling
and output are its :class:`~unisono.inference.taskio.TaskIO` (``pipe.io(task)``); the pipeline adds loading,
batching, cancellation, streaming (:mod:`unisono.inference.stream`) and listen-and-revise
(:mod:`unisono.inference.revise`).

The enhancement stage (``enhance=``, :meth:`Pipeline.load_enhancer`) is a pipeline-level choice, beside the
sampling options (:class:`unisono.options.GenerationOptions` stays sampling only): with an enhancer loaded, every
audio output is its 48 kHz stereo enhancement of the codec's decode (``wav [2, S]`` float32 at ``output_rate``),
streamed ones too (:class:`unisono.codec.enhance.EnhancerStream`).
"""

from __future__ import annotations

from pathlib import Path

from unisono import checkpoint as C
from unisono.codec import load_codec
from unisono.codec.enhance import Enhancer
from unisono.errors import UnisonoError
from unisono.fileio import atomic_dir, read_json
from unisono.inference import revise, stream
from unisono.inference.taskio import TaskIO
from unisono.inference.types import AudioOutput, GenerationCancelled, TaskSpec, task_spec
from unisono.lm import UnisonoLM
from unisono.lm.quant import quantize_inference
from unisono.options import GenerationOptions, check_option_defaults, default_options
from unisono.tasks import load_templates
from unisono.text.tokenizers import TokenizerSet
from unisono.vocab import Vocab


def _load_lm(d: Path, device: str):
    try:
        return UnisonoLM.from_pretrained(d, map_location=device)
    except UnisonoError:
        raise
    except Exception as e:  # safetensors' own errors for a truncated or tampered file
        raise UnisonoError(f"{d}/model.safetensors cannot be loaded ({str(e).splitlines()[0]}); "
                           "the file is truncated or corrupt: copy the checkpoint again") from None


def _enhancer_source(d: Path, enhance) -> Path | None:
    """The enhancer directory ``enhance`` asks for: None (no enhancer), True (checkpoint ``d``'s), or a path."""
    if enhance is None or enhance is False:
        return None
    if enhance is True:
        return C.enhancer_dir(d)
    p = Path(enhance)
    if not (p / "config.json").is_file():
        raise UnisonoError(f"--enhance {p} is not an enhancer directory (needs config.json and model.safetensors)")
    return p


def _load_codec(codec_dir: Path, device: str):
    try:
        return load_codec(codec_dir, map_location=device).eval()
    except UnisonoError:
        raise
    except Exception as e:
        raise UnisonoError(f"the codec in {codec_dir} cannot be loaded ({str(e).splitlines()[0]}); "
                           "the files are truncated or corrupt") from None


class Pipeline:
    """A trained model ready to use (see :mod:`unisono.checkpoint` for what a checkpoint holds; make one with
    :meth:`package`)."""

    def __init__(self, lm, vocab, tokenizers, codec, templates: dict, name: str = "", language: str = "en-us"):
        self.lm, self.vocab, self.tok, self.codec, self.name, self.language = (
            lm,
            vocab,
            tokenizers,
            codec,
            name,
            language,
        )
        self.lm.eval()
        self.default_inputs: dict[str, Path] = {}  # input name -> audio file used when a request omits it
        self.option_defaults: dict[str, dict] = {}  # "audio" / "text" -> option values (generation.json)
        self.templates = {}
        for task, tpl in templates.items():
            mods = tpl.modalities
            if task not in vocab.tasks or "semantic" in mods and tokenizers.semantic is None \
                    or "text_emb" in mods and tokenizers.text_emb is None:
                continue
            self.templates[task] = tpl
        self.tasks: dict[str, TaskSpec] = {t: task_spec(tpl) for t, tpl in sorted(self.templates.items())}
        self._io: dict[str, TaskIO] = {}
        self.enhancer: Enhancer | None = None  # the enhancement stage, when loaded (load_enhancer)
        self.directory: Path | None = None  # the checkpoint loaded, when loaded from one

    # -- loading and packaging ---------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory=None, device: str = "cpu", int8: bool = False,
                        int4: bool = False, enhance=None) -> Pipeline:
        """Load a checkpoint directory (default: the shipped model at :data:`unisono.checkpoint.DEFAULT_CHECKPOINT`).

        ``int8=True`` quantizes the language model's weights to int8 for inference on a CPU
        (:mod:`unisono.lm.quant`: about 2x faster generation at batch 1, validation loss within 0.1 %
        on the shipped model; docs/lm.md); ``int4=True`` its transformer's linear layers to 4 bits
        (faster again; heads int8). ``enhance``: True loads the checkpoint's ``enhancer/``, a directory that
        enhancer (:meth:`load_enhancer`); checked before the model loads."""
        if directory is None and not (C.DEFAULT_CHECKPOINT / "config.json").exists():
            raise UnisonoError(f"no checkpoint given and no shipped model at {C.DEFAULT_CHECKPOINT}; pass a "
                               "checkpoint directory (made by `unisono train` + Pipeline.package)")
        if int8 and int4:
            raise UnisonoError("give int8 or int4, not both")
        bits = 8 if int8 else 4 if int4 else None
        if bits and not str(device).startswith("cpu"):
            raise UnisonoError(f"int{bits} weights are for CPU inference; drop --int{bits} to run on {device}")
        d = C.require_checkpoint(C.DEFAULT_CHECKPOINT if directory is None else directory)
        enhancer_dir = _enhancer_source(d, enhance)
        codec_dir = C.codec_dir(d)
        vocab = Vocab.load(d / "vocab.json")
        lm = _load_lm(d, device)
        if lm.cfg.vocab_size != vocab.size or lm.cfg.num_streams != vocab.num_codebooks:
            raise UnisonoError(f"{d}: the model (V={lm.cfg.vocab_size}, K={lm.cfg.num_streams}) does not match "
                               f"vocab.json (V={vocab.size}, K={vocab.num_codebooks})")
        codec = _load_codec(codec_dir, device)
        toks = TokenizerSet.load(d / C.TOKENIZERS, codec=codec)
        for key, fp in toks.fingerprints().items():
            if key in vocab.fingerprints and vocab.fingerprints[key] != fp:
                raise UnisonoError(f"{d}: tokenizers/{key} does not match vocab.json (fingerprint differs)")
        templates = C.task_templates(d)
        lm = lm.to(device)
        if bits:
            quantize_inference(lm, bits)
        pipe = cls(lm, vocab, toks, codec, templates, name=d.name)
        pipe.directory = d
        if enhancer_dir is not None:
            pipe.load_enhancer(enhancer_dir, device)
        if (d / C.DEFAULTS).is_dir():
            pipe.default_inputs = {f.stem: f for f in sorted((d / C.DEFAULTS).glob("*.wav"))}
            pipe.tasks = {t: task_spec(tpl, pipe.default_inputs) for t, tpl in sorted(pipe.templates.items())}
        if (d / C.GENERATION).exists():
            pipe.option_defaults = check_option_defaults(read_json(d / C.GENERATION), str(d / C.GENERATION))
        return pipe

    @staticmethod
    def package(lm_dir, shards_dir, out_dir, codec_dir=None, templates: dict | None = None,
                precision: str = "float32", codec_precision: str | None = None, defaults: dict | None = None,
                generation: dict | None = None, enhancer=None) -> Path:
        """Assemble a self-contained checkpoint in ``out_dir`` from a trained LM checkpoint, the token
        shards' directory (vocab.json, tokenizers/, codec.json) and the codec (default: the one the shards
        name); see :func:`unisono.checkpoint.write_checkpoint` for ``precision``, ``codec_precision``,
        ``defaults`` (input name -> audio file used when a request leaves that input out) and ``generation``
        (``{"audio": {"guidance_scale": 3.0}, "text": {...}}``: the checkpoint's default sampling options);
        ``enhancer``: an enhancer directory copied in as ``enhancer/`` (``--enhance``)."""
        lm_dir, shards_dir, out = Path(lm_dir), Path(shards_dir), Path(out_dir)
        check_option_defaults(generation or {}, "package generation")
        Vocab.load(lm_dir / "vocab.json").check_compatible(Vocab.load(shards_dir / "vocab.json"))
        if codec_dir is None:
            codec_dir = read_json(shards_dir / "codec.json").get("source")
            if not codec_dir:
                raise UnisonoError(f"{shards_dir}/codec.json names no codec directory; pass codec_dir")
        with atomic_dir(out) as tmp:
            C.write_checkpoint(tmp, lm_dir, lm_dir / "vocab.json", shards_dir / C.TOKENIZERS, Path(codec_dir),
                               templates or load_templates(), precision, codec_precision, defaults, generation,
                               enhancer=None if enhancer is None else Path(enhancer))
        return out

    # -- the interface every front end uses --------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """The codec's rate in Hz (of its decode, and the rate audio inputs are read at)."""
        return int(self.codec.sample_rate)

    @property
    def output_rate(self) -> int:
        """The rate of audio outputs in Hz: the enhancer's when one is loaded, else the codec's."""
        return int(self.enhancer.config.out_rate) if self.enhancer is not None else self.sample_rate

    @property
    def output_channels(self) -> int:
        """Channels of audio outputs: the enhancer's (2: stereo) when one is loaded, else 1."""
        return int(self.enhancer.config.channels) if self.enhancer is not None else 1

    def load_enhancer(self, directory=None, device: str = "cpu") -> Enhancer:
        """Load the enhancement stage from ``directory`` (default: this checkpoint's ``enhancer/``): from now on
        every audio output is enhanced. ``unload``: set ``pipe.enhancer = None``."""
        d = C.enhancer_dir(self.directory) if directory is None else Path(directory)
        try:
            enh = Enhancer.from_pretrained(d, map_location=device)
        except UnisonoError:
            raise
        except Exception as e:
            raise UnisonoError(f"the enhancer in {d} cannot be loaded ({str(e).splitlines()[0]})") from None
        if enh.config.in_rate != self.sample_rate:
            raise UnisonoError(f"the enhancer in {d} reads {enh.config.in_rate} Hz; this codec decodes at "
                               f"{self.sample_rate} Hz")
        self.enhancer = enh
        return enh

    def enhance_output(self, out):
        """``out`` enhanced (an :class:`AudioOutput` at the codec's rate, mono, with an enhancer loaded): ``wav
        [C, S * ratio]`` float32 at :attr:`output_rate`; anything else as it is."""
        if self.enhancer is None or not isinstance(out, AudioOutput) or out.wav.ndim != 1:
            return out
        wav = self.enhancer.enhance(out.wav, out.sample_rate).numpy()
        return AudioOutput(wav, self.output_rate, out.task, {**out.info, "enhanced": True}, out.plan)

    def io(self, task: str) -> TaskIO:
        """The :class:`TaskIO` of ``task`` (inputs -> prompt -> frames -> output)."""
        if task not in self.tasks:
            raise UnisonoError(f"unknown task {task!r}; this checkpoint can do: {', '.join(self.tasks)}")
        if task not in self._io:
            self._io[task] = TaskIO(self.templates[task], self.vocab, self.tok, self.codec, self.lm, self.language,
                                    self.default_inputs)
        return self._io[task]

    def default_options(self, task: str) -> GenerationOptions:
        """The defaults of ``task``'s output kind (:func:`unisono.options.default_options`), with this
        checkpoint's own (``generation.json``)."""
        kind = self.tasks[task].output if task in self.tasks else "audio"
        return default_options(kind, self.option_defaults)

    def generate(self, task: str, options: GenerationOptions | None = None, cancel=None, progress=None,
                 revise: int = 0, captioner=None, **inputs):
        """Run ``task`` on one set of ``inputs`` (text: ``str``; audio: a file path, ``(wav, sample_rate)`` or
        a float array at the codec's rate). Options may also be given by name (``seed=3, top_k=50``).
        ``revise=N`` (audio tasks): generate, listen, revise, up to N more rounds (:meth:`generate_revised`)."""
        overrides = {k: inputs.pop(k) for k in list(inputs) if k in GenerationOptions.__dataclass_fields__}
        self.io(task)
        options = (options or self.default_options(task)).with_(**overrides).validate()
        if revise or captioner is not None:
            return self.generate_revised(task, inputs, options, rounds=revise, captioner=captioner, cancel=cancel,
                                         progress=progress)
        return self.generate_batch(task, [inputs], options, cancel=cancel, progress=progress)[0]

    def generate_revised(self, task: str, inputs: dict, options: GenerationOptions | None = None, rounds: int = 2,
                         captioner=None, cancel=None, progress=None, terms=None) -> AudioOutput:
        """Generate, listen, revise (:func:`unisono.inference.revise.generate_revised`); the chosen round is
        enhanced when an enhancer is loaded (the rounds are captioned before)."""
        out = revise.generate_revised(self, task, inputs, options, rounds, captioner, cancel, progress, terms)
        return self.enhance_output(out)

    def generate_batch(self, task: str, inputs: list[dict], options: GenerationOptions | None = None, cancel=None,
                       progress=None, enhance: bool = True):
        """Run ``task`` on several input sets; returns one output per set (same order).

        Sets whose prompts have the same length run as one batch; every row samples with its own generator
        seeded with ``options.seed``, so a row gives the same output as the same inputs run alone.
        ``cancel`` (an event) stops generation at the next frame with :class:`GenerationCancelled`;
        ``progress(frames_done, frames_max)`` is called as frames complete. ``enhance=False``: the codec's decode
        even with an enhancer loaded."""
        io = self.io(task)
        options = (options or self.default_options(task)).validate()
        prepared = [io.prepare(inp, options) for inp in inputs]
        groups: dict[tuple, list[int]] = {}  # equal prompt length and length floor: one batch
        for i, p in enumerate(prepared):
            groups.setdefault((p.prompt.shape[0], p.min_new), []).append(i)
        results: dict[int, object] = {}
        for idxs in groups.values():
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled("generation was cancelled")
            batch = [prepared[i] for i in idxs]
            on_frame = None
            if cancel is not None or progress is not None:  # a per-frame callback only when someone listens
                total = max(p.max_new for p in batch)

                def on_frame(n, tokens, total=total):
                    if cancel is not None and cancel.is_set():
                        raise GenerationCancelled("generation was cancelled")
                    if progress is not None:
                        progress(n, total)

            new = io.sample(batch, options, on_frame=on_frame)
            for row, i in enumerate(idxs):
                results[i] = io.finish(new[row, : prepared[i].max_new])
        return [self.enhance_output(results[i]) if enhance else results[i] for i in range(len(inputs))]

    def generate_stream(self, task: str, inputs: dict, options: GenerationOptions | None = None, cancel=None,
                        emit=None, chunk_frames: int = 10) -> AudioOutput:
        """Generate one audio output, handing it to ``emit`` as it is decoded
        (:func:`unisono.inference.stream.generate_stream`)."""
        return stream.generate_stream(self, task, inputs, options, cancel, emit, chunk_frames)
