"""Peak memory of upload validation under concurrent pixel bombs, with and without the
decode budget.

One PNG of 80 megapixels (the default ``max_image_pixels``) that is almost flat, so it
compresses to a few hundred KB, is validated by N threads at once
(``validate_upload``, as N concurrent uploads would). Each side runs in a fresh child
process, so its peak RSS (``VmHWM``; not ``ru_maxrss``, which keeps the parent's RSS
across ``fork``/``exec``) is its own: "budget" uses the default
``decode_pixel_budget`` (one maximal image at a time), "unbounded" sets the budget so
high that every decode runs at once (the behaviour before the budget). Sides alternate
over the rounds; the table reports medians and the ratio budget / unbounded of the
memory added by decoding. Run::

    .venv/bin/python bench/bench_decode_memory.py [--threads 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WIDTH, HEIGHT = 10_000, 8_000  # 80,000,000 pixels
UNBOUNDED = 10**15


def make_png(path: Path) -> int:
    """Write the bomb: flat grey with a few noisy stripes; returns its size in bytes."""
    import numpy as np
    from PIL import Image

    pixels = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    rng = np.random.default_rng(7)
    for row in range(0, HEIGHT, 1_000):
        pixels[row : row + 2] = rng.integers(0, 255, (2, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(path, format="PNG", optimize=True)
    return path.stat().st_size


def _status_mb(field: str) -> float:
    """A memory line of ``/proc/self/status`` (VmRSS: now, VmHWM: peak) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def child(path: Path, threads: int, budget: int) -> None:
    """One side: validate ``path`` from ``threads`` threads at once; print JSON."""
    from kenning.ingest.validate import validate_upload
    from kenning.settings import Settings

    settings = Settings(decode_pixel_budget=budget, decode_wait_s=600.0)
    data = path.read_bytes()
    baseline = _status_mb("VmRSS")
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work() -> None:
        start.wait()
        try:
            checked = validate_upload(data, settings)
            assert (checked.width, checked.height) == (WIDTH, HEIGHT)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    started = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise SystemExit(f"validation failed: {errors[0]!r}")
    peak = _status_mb("VmHWM")
    print(json.dumps({"baseline_mb": baseline, "peak_mb": peak, "seconds": seconds}))


def side(path: Path, threads: int, budget: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--threads", str(threads),
         "--budget", str(budget)],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.threads, args.budget)
        return

    from kenning.settings import Settings

    default_budget = Settings().decode_pixel_budget
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bomb.png"
        size = make_png(path)
        print(f"{WIDTH}x{HEIGHT} PNG ({WIDTH * HEIGHT / 1e6:.0f} MP), {size / 1024:.0f} KB; "
              f"{args.threads} threads; default decode_pixel_budget={default_budget:,}")
        runs: dict[str, list[dict[str, float]]] = {"unbounded": [], "budget": []}
        for _ in range(args.rounds):
            runs["unbounded"].append(side(path, args.threads, UNBOUNDED))
            runs["budget"].append(side(path, args.threads, default_budget))

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    added = {name: median(name, "peak_mb") - median(name, "baseline_mb") for name in runs}
    print("| side | baseline RSS MB | peak RSS MB | added by decoding MB | seconds | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("unbounded", "budget"):
        print(f"| {name} | {median(name, 'baseline_mb'):.0f} | {median(name, 'peak_mb'):.0f} "
              f"| {added[name]:.0f} | {median(name, 'seconds'):.1f} "
              f"| {added[name] / added['unbounded']:.2f} |")


if __name__ == "__main__":
    main()
