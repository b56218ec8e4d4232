"""Atomic file writes: a reader (or a resumed run) never sees a half-written file.

Every writer here writes to a temporary file in the destination's directory, flushes and fsyncs it,
then renames it over the destination with :func:`os.replace`, which is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from unisono.errors import UnisonoError


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, so no other thread sees it change)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike, kind: str = "file", flag: str = "output") -> Path:
    """``path`` as a Path, checked (before any work) to be writable as a ``kind`` (``"file"`` or ``"dir"``) output:
    a file output is not an existing directory, a directory output not an existing file, and the nearest existing
    folder on the way is a folder this process can create files in (tried, so it holds for root and read-only file
    systems too). ``flag`` names the option in the one-line error (``-o``, ``--out``)."""
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise UnisonoError(f"{flag} {path} is a directory; give a file name")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise UnisonoError(f"{flag} {path} is a file; give a directory")
    folder = path if kind == "dir" else path.parent
    while not folder.exists() and not folder.is_symlink():
        folder = folder.parent
    if not folder.is_dir():
        raise UnisonoError(f"cannot write {flag} {path}: {folder} is a file, not a directory; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".unisono-write-check-", dir=folder)
    except OSError as e:
        raise UnisonoError(f"cannot write {flag} {path}: {folder} is not writable ({e.strerror}); "
                           "choose another path") from None
    os.close(fd)
    os.unlink(probe)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    The file gets the mode ``open()`` would give it (``0666`` less the umask: ``0644`` under umask 022), not the
    ``0600`` of :func:`tempfile.mkstemp`. ``suffix`` defaults to the destination's suffix so that writers which
    infer the format from the file name (soundfile, for example) still work.
    """
    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise UnisonoError(f"cannot write {path}: it is a directory; choose a file name")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UnisonoError(f"cannot create directory {parent}: {e.strerror}; choose a writable output path") from e
    if suffix is None:
        suffix = path.suffix
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=parent)
    except OSError as e:
        raise UnisonoError(f"cannot write {path}: {e.strerror}; choose a writable output path") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp makes 0600 (so do writers that write a temporary file of their own): the mode open() gives
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty directory ``path.partial`` to fill; on success it replaces ``path``, on error it is
    deleted (an existing ``path`` is then left as it was). ``overwrite=False``: an existing ``path`` is
    refused before anything is written."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UnisonoError(f"{path} already exists; choose another output directory")
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise UnisonoError(f"cannot create directory {tmp}: {e.strerror}; choose a writable output path") from e
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (sorted keys, so equal objects give equal bytes) atomically."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write one JSON object per line (sorted keys) atomically."""
    lines = [json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows]
    write_text(path, "".join(line + "\n" for line in lines))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a one-line error for a missing or corrupt file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnisonoError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnisonoError(f"{path} is not valid JSON ({e}); delete it or regenerate it") from None



@functools.lru_cache(maxsize=1)
def _yaml_loader():

    class Loader(yaml.SafeLoader):
        """SafeLoader that reads ``1e-3`` and ``3E+4`` as floats (YAML 1.1 wants a dot: ``1.0e-3``)."""

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))
    return Loader


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-3`` as a number (every config and ``--set`` value goes through it)."""
    return yaml.load(text, Loader=_yaml_loader())
