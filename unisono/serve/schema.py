"""The OpenAPI description of ``POST /generate``'s body: one schema per task (``oneOf``, told apart by the
``task`` constant), each with the inputs that task takes and needs, its own option defaults (``max_duration``
within the server's limit), and the limits the server enforces (text length, option ranges)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from unisono.options import GenerationOptions

from .catalog import task_guide
from .parse import GENERATE_FORMATS, ServerLimits, served_tasks, task_defaults

# The ranges GenerationOptions.validate and the request parser (every number within +-2**31) accept;
# max_duration's maximum is the server's limit.
OPTION_BOUNDS: dict[str, dict[str, float]] = {
    "top_k": {"minimum": 0, "maximum": 2**31},
    "top_p": {"exclusiveMinimum": 0, "maximum": 1},
    "temperature": {"exclusiveMinimum": 0, "maximum": 10},
    "guidance_scale": {"minimum": 0, "maximum": 20},
    "seed": {"minimum": -(2**31), "maximum": 2**31},
    "max_duration": {"exclusiveMinimum": 0},
}
OPTION_HELP = {
    "top_k": "sample from the k likeliest tokens (0: no limit)",
    "top_p": "sample from the smallest set of tokens whose probability reaches p (1: off)",
    "temperature": "sharpen (<1) or flatten (>1) the distribution",
    "guidance_scale": "classifier-free guidance (1: off)",
    "seed": "the same seed and inputs give the same output",
    "max_duration": "longest output, in seconds of audio",
}


def _input_schema(kind: str, help_line: str, limits: ServerLimits, binary: bool) -> dict:
    if kind == "text":
        return {"type": "string", "maxLength": limits.max_text_chars,
                "description": f"{help_line} At most {limits.max_text_chars} characters."}
    if binary:
        return {"type": "string", "format": "binary", "description": f"{help_line} An uploaded file."}
    return {"type": "string", "maxLength": limits.max_body_bytes,
            "description": f"{help_line} The file's bytes, base64-encoded."}


def task_schema(spec, defaults: GenerationOptions, limits: ServerLimits, binary: bool) -> dict:
    """The body schema of one task (``binary``: audio inputs as multipart uploads, else base64 JSON strings)."""
    guide = task_guide(spec)
    props: dict[str, Any] = {"task": {"type": "string", "const": spec.name, "description": guide["title"]}}
    for name, kind in spec.inputs.items():
        props[name] = _input_schema(kind, guide["inputs"][name], limits, binary)
        if name in spec.optional:
            props[name]["description"] += " Optional: the model's default is used when it is left out."
    for f in fields(GenerationOptions):
        value = getattr(defaults, f.name)
        bounds = {**OPTION_BOUNDS[f.name], **({"maximum": limits.max_output_seconds} if f.name == "max_duration"
                                              else {})}
        props[f.name] = {"type": "integer" if f.type in ("int", int) else "number", "default": value, **bounds,
                         "description": OPTION_HELP[f.name]}
    if spec.output == "audio":
        props["response_format"] = {"type": "string", "enum": list(GENERATE_FORMATS), "default": GENERATE_FORMATS[0],
                                    "description": "the audio file, or JSON with the file base64-encoded"}
        props["stream"] = {"type": "boolean", "default": False, "description": "chunked WAV response"}
    else:
        props["response_format"] = {"type": "string", "enum": ["json"], "description": "text answers are JSON"}
    required = ["task", *(n for n in spec.inputs if n not in spec.optional)]
    inputs = ", ".join(f"{n} ({k}{', optional' if n in spec.optional else ''})" for n, k in spec.inputs.items())
    schema = {"title": f"{spec.name}: {guide['title']}", "type": "object", "required": required,
              "properties": props, "additionalProperties": False,
              "description": f"{guide['summary']} Inputs: {inputs}. Answers with {spec.output}."}
    if guide["example"] and not binary:
        schema["examples"] = [{"task": spec.name, **guide["example"]}]
    return schema


def request_schema(pipeline, limits: ServerLimits) -> dict:
    """The ``requestBody`` of ``POST /generate``: JSON (audio as base64) or multipart (audio as uploads), each
    one of the per-task schemas."""
    tasks = served_tasks(pipeline)
    content = {}
    for media, binary in (("application/json", False), ("multipart/form-data", True)):
        branches = [task_schema(spec, task_defaults(pipeline, limits, name), limits, binary)
                    for name, spec in sorted(tasks.items())]
        content[media] = {"schema": {"oneOf": branches}}
    return {"required": True, "content": content}
