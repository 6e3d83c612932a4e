"""Save and load frozen stage results (Snakemake checkpoint files) without changing a value.

An artifact is an ``.npz`` file: every ndarray field is stored as an array (exact bytes), every
other field as JSON in ``__meta__`` (floats round-trip exactly through ``repr``). Nothing is
pickled (``allow_pickle=False``). Writes are atomic: a temporary file in the same directory,
fsync, then ``os.replace``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from calpipe.errors import ArtifactError

T = TypeVar("T")
FORMAT = "calpipe-artifact"
VERSION = 1


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a published file honours umask
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


def save_artifact(obj: Any, path: str | Path) -> None:
    """Write a frozen dataclass of ndarrays and JSON-able values to ``path`` (.npz)."""
    if not dataclasses.is_dataclass(obj):
        raise TypeError("save_artifact expects a dataclass instance")
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "O":
                raise TypeError(f"{type(obj).__name__}.{f.name}: object arrays are not stored")
            arrays[f.name] = value
        else:
            meta[f.name] = value
    header = {"format": FORMAT, "version": VERSION, "type": type(obj).__name__, "fields": meta}
    arrays["__meta__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    def write(fh: Any) -> None:
        np.savez(fh, **arrays)  # type: ignore[arg-type]

    atomic_write_bytes(Path(path), write)


def load_artifact(cls: type[T], path: str | Path) -> T:
    """Read an artifact written by :func:`save_artifact` as an instance of ``cls``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["__meta__"]).decode())
            arrays = {k: data[k] for k in data.files if k != "__meta__"}
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"unreadable stage artifact {path}: {exc}") from exc
    if header.get("format") != FORMAT or header.get("type") != cls.__name__:
        raise ArtifactError(f"{path} is not a {cls.__name__} artifact")
    values = dict(header["fields"])
    values.update(arrays)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if set(values) != names:
        raise ArtifactError(f"{path}: fields {sorted(set(values) ^ names)} do not match "
                            f"{cls.__name__}")
    return cls(**values)
