"""A/B of the L1 big-array write: format 1 (5-D, Blosc) vs format 2 (time axis, Blosc + crc32c).

157 MB per repeat (spectra f4 + flags u2, 8192 ch x 80 dumps x 2x4 px x 5 subscans), subscan-
major memory as calpipe.physics.calibrate returns it. Prints min and median of 4 repeats.
Usage: python benchmarks/bench_l1_write.py [--workdir /tmp/bench_l1_write]
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from calpipe import l1

C, D, R, A, S = 8192, 80, 2, 4, 5


def old_chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """The format-1 rule: one subscan per chunk, halve dumps then pixels to <= 8 MiB."""
    chunks = list(shape)
    chunks[-1] = 1
    for ax in (1, 2, 3):
        while int(np.prod(chunks)) * itemsize > l1.CHUNK_BYTES and chunks[ax] > 1:
            chunks[ax] = (chunks[ax] + 1) // 2
    return tuple(chunks)


def blosc() -> dict[str, object]:
    return {"compressors": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench_l1_write"))
    ns = parser.parse_args()
    ns.workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "spectra": rng.normal(0, 1, (S, C, D, R, A)).astype(np.float32).transpose(1, 2, 3, 4, 0),
        "flags": np.zeros((S, C, D, R, A), np.uint16).transpose(1, 2, 3, 4, 0),
    }

    def v1(path: Path) -> None:
        g = zarr.open_group(str(path), mode="w", zarr_format=3)
        for name, x in arrays.items():
            a = g.create_array(name, shape=x.shape, dtype=x.dtype,
                               chunks=old_chunks(x.shape, x.itemsize), **blosc())
            a[...] = x

    def v2(path: Path, crc: bool = True) -> None:
        g = zarr.open_group(str(path), mode="w", zarr_format=3)
        for name, x in arrays.items():
            shape = (C, S * D, R, A)
            codecs = l1._codecs(True) if crc else blosc()
            a = g.create_array(name, shape=shape, dtype=x.dtype,
                               chunks=l1.l1_chunks(shape, x.itemsize, D), **codecs)
            for s in range(S):
                a[:, s * D:(s + 1) * D] = x[..., s]

    variants: dict[str, Callable[[Path], None]] = {
        "format 1": v1, "format 2": v2, "format 2 without crc32c": lambda p: v2(p, False)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(4):
        for name, fn in variants.items():
            path = ns.workdir / f"{name.replace(' ', '_')}.zarr"
            shutil.rmtree(path, ignore_errors=True)
            t0 = time.perf_counter()
            fn(path)
            times[name].append(time.perf_counter() - t0)
    mb = sum(x.nbytes for x in arrays.values()) / 1e6
    for name, t in times.items():
        print(f"{name:26s} min {min(t):.3f} s   median {float(np.median(t)):.3f} s   ({mb:.0f} MB)")
    shutil.rmtree(ns.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
