"""Pipeline v2: image ingest through a real ``kenning serve`` against the raw processors.

Baseline ("raw processors", one thread): per image, exactly what the image processors
compute, called directly and summed: decode (``open_image`` + EXIF, as
``image.decode``; then ``normalize_image``, the pixels the others share), thumbnail
(``make_thumbnail``), PDQ (``pdq_dihedral``) and OCR (``read_image_text`` with the
default backend from ``make_ocr_backend``). One untimed pass first loads the OCR model.

End to end: ``kenning serve`` with its default configuration (a subprocess on a fresh
temporary data dir, a free loopback port). Warm-up images that are not in the measured
set (crops of ``page.png`` and ``text.png``, so their sha256 differs) are ingested
until every worker process has run every image step (OCR model, embedding model and
language identifier loaded); then all images go in one ``POST /v1/assets/batch``
(multipart) and the clock runs until no stage run is pending, queued or running. The
end state is checked from the database: every measured asset ``ready``, 8 PDQ
fingerprints and a thumbnail each, embedding rows = chunks + assets with chunks.

What end to end does beyond the raw side: the upload and its validation (a decode of
each image at ingest), a second decode in the OCR step (steps decode once each), the
text stages on the OCR text (chunk, keyword, language, embeddings), and every write
(rows, thumbnails, index log). Ratio = raw seconds / e2e seconds, medians over
``--rounds`` interleaved rounds. Run::

    .venv/bin/python bench/bench_pipeline_images.py [--rounds 3] [--profile] [--quick]
"""

from __future__ import annotations

import argparse
import io
import logging
import mimetypes
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from serve_support import (
    Server,
    WorkerLog,
    asset_statuses,
    provenance,
    step_profiles,
    wait_idle,
)
from serve_support import warm_until_covered as warm_workers
from sqlalchemy import func, select

from kenning.demo.corpus import sample_images
from kenning.inference.ocr import OcrBackend, make_ocr_backend
from kenning.media.images import normalize_image, open_image
from kenning.media.kinds import MediaKind
from kenning.processors.image.decode import extract_exif
from kenning.processors.image.ocr import read_image_text
from kenning.processors.image.pdq import pdq_dihedral
from kenning.processors.image.thumbnail import make_thumbnail
from kenning.settings import Settings
from kenning.stores.metadata.tables import Asset, DerivedBlob, Embedding, Fingerprint, Segment

TARGET_RATIO = 0.8
PARTS = ("decode", "thumbnail", "pdq", "ocr")


@dataclass
class Run:
    side: str
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)
    log: WorkerLog = field(default_factory=WorkerLog)
    cpu: dict[str, float] = field(default_factory=dict)
    profile: list[str] = field(default_factory=list)
    warmups: int = 0


def run_raw(images: dict[str, bytes], ocr: OcrBackend, settings: Settings) -> Run:
    parts = dict.fromkeys(PARTS, 0.0)
    for data in images.values():
        t0 = time.perf_counter()
        im = open_image(data, settings)
        extract_exif(im)
        pixels = normalize_image(im)
        t1 = time.perf_counter()
        make_thumbnail(pixels, settings.thumbnail_px)
        t2 = time.perf_counter()
        pdq_dihedral(pixels)
        t3 = time.perf_counter()
        read_image_text(ocr, pixels, settings.ocr_max_side)
        t4 = time.perf_counter()
        for part, seconds in zip(PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[part] += seconds
    return Run("raw processors", sum(parts.values()), parts)


def warm_variant(source: bytes, i: int) -> bytes:
    """A crop of ``source`` that no measured image (nor another variant) equals."""
    with Image.open(io.BytesIO(source)) as im:
        w, h = im.size
        crop = im.crop((i + 1, i + 1, w - 1, h - 1))
        buf = io.BytesIO()
        crop.save(buf, format="PNG")
    return buf.getvalue()


def files_body(images: dict[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (name, data, mimetypes.guess_type(name)[0] or "application/octet-stream"))
            for name, data in images.items()]


def image_steps() -> set[str]:
    from kenning.container import Kenning

    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        k = Kenning(Settings(data_dir=Path(tmp), workers=0, _env_file=None))
        try:
            return {st.step for st in k.registry.plan(MediaKind.IMAGE)}
        finally:
            k.close()


def verify(server: Server, ids: list[str]) -> None:
    statuses = asset_statuses(server.db, ids)
    with server.db.session(write=False) as s:
        # The 8 dihedral variants of every image (a trimmed variant too when its
        # margins are flat: not counted, the raw side does not compute it).
        fingerprints = s.scalar(select(func.count()).select_from(Fingerprint).where(
            Fingerprint.asset_id.in_(ids), Fingerprint.algorithm == "pdq",
            Fingerprint.variant != "trimmed"))
        thumbs = s.scalar(select(func.count()).select_from(DerivedBlob).where(
            DerivedBlob.asset_id.in_(ids), DerivedBlob.role == "thumbnail"))
        chunks = dict(s.execute(select(Segment.asset_id, func.count()).where(
            Segment.asset_id.in_(ids), Segment.kind == "chunk").group_by(Segment.asset_id)
        ).all())
        embeddings = s.scalar(select(func.count()).select_from(Embedding).where(
            Embedding.asset_id.in_(ids)))
    expected = ({"ready": len(ids)}, 8 * len(ids), len(ids),
                sum(chunks.values()) + len(chunks))
    found = (statuses, fingerprints, thumbs, embeddings)
    if found != expected:
        raise RuntimeError("wrong end state (statuses, PDQ fingerprints, thumbnails, "
                           f"embedding rows): expected {expected}, found {found}")


def run_e2e(images: dict[str, bytes], warm_sources: list[bytes], steps: set[str],
            profile: bool) -> Run:
    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        server = Server(data_dir)
        try:
            server.start()
            warm_ids: list[str] = []

            def send_warm(i: int) -> None:
                body = {f"warm-{i}-{j}.png": warm_variant(src, i)
                        for j, src in enumerate(warm_sources)}
                warm_ids.extend(server.post_batch(files=files_body(body)))

            rounds = warm_workers(server, send_warm, steps)
            cpu0 = server.cpu()
            started = time.perf_counter()
            server.post_batch(files=files_body(images))
            wait_idle(server.db)
            seconds = time.perf_counter() - started
            cpu1 = server.cpu()
            with server.db.session(write=False) as s:
                ids = list(s.scalars(select(Asset.id).where(Asset.id.not_in(warm_ids))))
            if len(ids) != len(images):
                raise RuntimeError(f"{len(ids)} measured assets, expected {len(images)}")
            verify(server, ids)
            lines = [prof.line(name) for name, prof in
                     sorted(step_profiles(server.db, ids).items())] if profile else []
        finally:
            log = server.stop()
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    return Run("e2e default", seconds, {}, log, cpu, lines, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side")
    parser.add_argument("--profile", action="store_true",
                        help="print per-step timings from stage_run after each e2e run")
    parser.add_argument("--quick", action="store_true",
                        help="a small run: 8 images, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    logging.basicConfig(level=logging.WARNING)

    paths = sample_images()
    images = {name: path.read_bytes() for name, path in paths.items()}
    if args.quick:
        images = dict(list(images.items())[:8])
    warm_sources = [paths["page.png"].read_bytes(), paths["text.png"].read_bytes()]
    settings = Settings(_env_file=None)
    ocr = make_ocr_backend(settings)
    steps = image_steps()
    print(f"start: {provenance()}", flush=True)
    run_raw(images, ocr, settings)  # warm-up pass: OCR model loaded, caches filled

    runs: dict[str, list[Run]] = {"raw processors": [], "e2e default": []}
    for round_no in range(1, args.rounds + 1):
        raw = run_raw(images, ocr, settings)
        runs[raw.side].append(raw)
        parts = ", ".join(f"{p} {s:.2f}" for p, s in raw.parts.items())
        print(f"round {round_no}  raw processors {raw.seconds:7.2f} s  ({parts})", flush=True)
        e2e = run_e2e(images, warm_sources, steps, args.profile)
        runs[e2e.side].append(e2e)
        print(f"round {round_no}  e2e default    {e2e.seconds:7.2f} s  deliveries "
              f"{e2e.log.deliveries} (no-op {e2e.log.noop_deliveries}) from "
              f"{e2e.log.processes} worker processes, warm-up rounds {e2e.warmups}, CPU s api "
              f"{e2e.cpu['api']:.1f} workers {e2e.cpu['workers']:.1f}", flush=True)
        for line in e2e.profile:
            print(line, flush=True)

    raw_s = statistics.median(r.seconds for r in runs["raw processors"])
    e2e_s = statistics.median(r.seconds for r in runs["e2e default"])
    kinds = Counter(Path(n).suffix for n in images)
    print(f"\n{len(images)} images ({dict(kinds)}, {sum(map(len, images.values())) / 1e6:.1f} MB), "
          f"{args.rounds} rounds, medians; OCR {ocr.name}, model_threads="
          f"{settings.model_threads}; load average at end: {os.getloadavg()}\n")
    print(f"{'side':<16} {'seconds':>8} {'images/s':>8}  " + "  ".join(
        f"{p:>9}" for p in PARTS))
    med = {p: statistics.median(r.parts[p] for r in runs["raw processors"]) for p in PARTS}
    print(f"{'raw processors':<16} {raw_s:>8.2f} {len(images) / raw_s:>8.2f}  "
          + "  ".join(f"{med[p]:>9.2f}" for p in PARTS))
    e2e_runs = runs["e2e default"]
    print(f"{'e2e default':<16} {e2e_s:>8.2f} {len(images) / e2e_s:>8.2f}  deliveries "
          f"{statistics.median(r.log.deliveries for r in e2e_runs):.0f}, no-op "
          f"{statistics.median(r.log.noop_deliveries for r in e2e_runs):.0f} "
          f"({100 * statistics.median(r.log.noop_fraction for r in e2e_runs):.1f}%), CPU s "
          f"api {statistics.median(r.cpu['api'] for r in e2e_runs):.1f} workers "
          f"{statistics.median(r.cpu['workers'] for r in e2e_runs):.1f}")
    ratio = raw_s / e2e_s
    verdict = "holds" if ratio >= TARGET_RATIO else "MISSED"
    print(f"\nratio = raw seconds / e2e seconds = {ratio:.2f} (target >= {TARGET_RATIO}): "
          f"{verdict}")


if __name__ == "__main__":
    main()
