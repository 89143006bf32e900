"""Image near-duplicates: recall and precision on real photos under common edits.

Originals: 30 real photos and scans, never near-duplicates of one another: 11 from
scikit-image's data folder (astronaut, camera, coffee, chelsea, rocket, coins,
hubble_deep_field, retina, motorcycle_left, moon, page) and 19 from Debian
``opencv-doc``'s examples/data (baboon, fruits, messi5, starry_night, HappyFish,
butterfly, building, home, orange, apple, aero1, leuvenA, graf1, board, smarties,
squirrel_cls, rubberwhale1, sudoku, ela_original). Distractors: 36 other real images,
never edited (7 from scikit-image, 29 from opencv-doc, among them 13 photos of the same
calibration chessboard: hard negatives for one another). Images that are themselves
near-duplicates of a chosen one (stereo pairs such as aloeR, motorcycle_right, leuvenB,
graf3, ela_modified) are left out, so any match other than the original is wrong.

Edits of each original (30 x 10 = 300 queries; JPEG q90 unless said): JPEG re-encode at
q50; resize to 50%; crop keeping the central 80% of the area; crop keeping 70% of the
area in one corner (chosen per image); mirror; rotate 90 degrees; rotate 5 degrees
(canvas expanded, black corners); brightness +30%; a caption strip (a white band of 15%
of the height, top or bottom, with black text drawn by Pillow); a 10% solid border
(black, white, red or blue). Edited copies are never ingested.

Originals and distractors go into a fresh in-process Kenning (embedded profile; OCR is
replaced by a backend that reads nothing, as it plays no part in matching). Each edited
copy is then a query:

* ``pdq alone`` (the baseline, the behaviour before trimming): the upload's PDQ
  against the 8 dihedral variants only (``SimilarityService._by_pdq`` on the plain
  hash, matches through a ``trimmed`` variant dropped);
* ``pdq + trim``: the ``pdq`` matches of ``SimilarityService.similar(upload=bytes)``;
* ``pdq + trim + orb (product)``: every match of that call, with the local-feature
  stage's (``image_local_features``: ORB descriptors range-searched in the hash index,
  candidates verified by RANSAC; :mod:`kenning.processors.image.orb`, run here with
  ``orb_keypoints=300``: the stage is off by default);
* ``+ ORB/RANSAC`` (a prototype, only with OpenCV importable; not in the product):
  ``pdq + trim`` matches plus assets whose ORB features (150 per image) agree with the
  query's on a similarity transform with at least 15 RANSAC inliers; candidates are the
  3 assets with most ratio-tested nearest-descriptor votes over all stored descriptors
  (a brute-force stand-in for a binary descriptor index).

A true positive: the original among the matches; a false positive: any other asset
matched. Run::

    .venv/bin/python bench/bench_image_duplicates.py [--thresholds 16 24 31 40 48]
"""

from __future__ import annotations

import argparse
import io
import logging
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

from kenning.container import Kenning
from kenning.demo.debs import package_tree
from kenning.demo.images import sample_images
from kenning.ingest.service import IngestRequest
from kenning.principal import Principal
from kenning.processors.image.orb import describe
from kenning.processors.image.pdq import TRIMMED, pdq_dihedral, pdq_hash
from kenning.processors.image.trim import trim_margins
from kenning.services.similarity import SimilarRequest, Thresholds
from kenning.settings import Settings

ORIGINALS = [
    "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "hubble_deep_field",
    "retina", "motorcycle_left", "moon", "page",
    "baboon", "fruits", "messi5", "starry_night", "HappyFish", "butterfly", "building",
    "home", "orange", "apple", "aero1", "leuvenA", "graf1", "board", "smarties",
    "squirrel_cls", "rubberwhale1", "sudoku", "ela_original",
]
DISTRACTORS = [
    "ihc", "text", "cell", "clock_motion", "brick", "grass", "gravel",
    "stuff", "basketball1", "Blender_Suzanne1", "left", "pca_test1", "aloeL",
    "licenseplate_motion", "text_defocus", "box_in_scene", "chicky_512", "imageTextN",
    "notes", "text_motion", "blox", "cards", "digits",
    *(f"left{i:02d}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14)),
]
CAPTIONS = ["BREAKING: you won't believe this", "Shared 10k times - is it real?",
            "Look what they found today", "Photo of the day #42"]
ORB_FEATURES, ORB_INLIERS, ORB_CANDIDATES = 150, 15, 3
PRODUCT = "pdq + trim + orb (product)"
ORB_KEYPOINTS = 300  # settings.orb_keypoints for the product side (0, off, by default)


# --------------------------------------------------------------------------- data
def image_files() -> dict[str, Path]:
    files = {Path(k).stem: v for k, v in sample_images().items()}
    folder = package_tree("opencv-doc") / "usr/share/doc/opencv-doc/examples/data"
    files.update({p.stem: p for p in folder.iterdir() if p.stem not in files})
    return files


def flat_rgb(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        ground = Image.new("RGBA", im.size, (255, 255, 255, 255))
        ground.alpha_composite(im)
    return im.convert("RGB")


def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def crop(im: Image.Image, area: float, corner: int | None = None) -> Image.Image:
    side = area ** 0.5
    w, h = im.size
    cw, ch = round(w * side), round(h * side)
    if corner is None:
        x0, y0 = (w - cw) // 2, (h - ch) // 2
    else:
        x0, y0 = (0 if corner in (0, 2) else w - cw), (0 if corner in (0, 1) else h - ch)
    return im.crop((x0, y0, x0 + cw, y0 + ch))


def caption(im: Image.Image, rng: random.Random) -> Image.Image:
    w, h = im.size
    band = max(12, round(0.15 * h))
    out = Image.new("RGB", (w, h + band), "white")
    top = rng.random() < 0.5
    out.paste(im, (0, band if top else 0))
    font = ImageFont.load_default(size=max(8, int(band * 0.45)))
    ImageDraw.Draw(out).text((w * 0.04, (0 if top else h) + band * 0.25),
                             rng.choice(CAPTIONS), fill="black", font=font)
    return out


def border(im: Image.Image, rng: random.Random) -> Image.Image:
    colour = rng.choice(["black", "white", (200, 30, 30), (40, 40, 160)])
    return ImageOps.expand(im, border=round(0.10 * min(im.size)), fill=colour)


Edit = Callable[[Image.Image, random.Random], bytes]
EDITS: dict[str, Edit] = {
    "jpeg q50": lambda im, r: jpeg(im, 50),
    "resize 50%": lambda im, r: jpeg(im.resize((im.width // 2, im.height // 2),
                                               Image.Resampling.LANCZOS)),
    "crop 80% centre": lambda im, r: jpeg(crop(im, 0.8)),
    "crop 70% corner": lambda im, r: jpeg(crop(im, 0.7, corner=r.randrange(4))),
    "mirror": lambda im, r: jpeg(ImageOps.mirror(im)),
    "rotate 90": lambda im, r: jpeg(im.rotate(90, expand=True)),
    "rotate 5": lambda im, r: jpeg(im.rotate(5, resample=Image.Resampling.BICUBIC,
                                             expand=True)),
    "brightness +30%": lambda im, r: jpeg(ImageEnhance.Brightness(im).enhance(1.3)),
    "caption strip": lambda im, r: jpeg(caption(im, r)),
    "border 10%": lambda im, r: jpeg(border(im, r)),
}


def edited_copies(originals: dict[str, bytes]) -> list[tuple[str, str, bytes]]:
    out = []
    for name, data in originals.items():
        im = flat_rgb(data)
        for edit, make in EDITS.items():
            out.append((name, edit, make(im, random.Random(f"{name}/{edit}"))))
    return out


# --------------------------------------------------------------------------- ORB prototype
class OrbStage:
    """Local features + RANSAC over the ingested images (prototype, needs OpenCV)."""

    def __init__(self, images: dict[str, bytes]) -> None:
        import cv2

        cv2.setNumThreads(1)
        self.cv2 = cv2
        self.orb = cv2.ORB_create(nfeatures=ORB_FEATURES)
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        started = time.perf_counter()
        self.features = {name: self.describe(flat_rgb(data)) for name, data in images.items()}
        self.seconds_per_image = (time.perf_counter() - started) / len(images)
        self.names = list(self.features)
        self.owner = np.concatenate([[i] * len(self.features[n][1])
                                     for i, n in enumerate(self.names)])
        self.all = np.concatenate([self.features[n][1] for n in self.names])

    def describe(self, im: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        grey = np.asarray(im.convert("L"))
        scale = 512 / max(grey.shape)
        if scale < 1:
            grey = self.cv2.resize(grey, (round(grey.shape[1] * scale),
                                          round(grey.shape[0] * scale)),
                                   interpolation=self.cv2.INTER_AREA)
        keypoints, descriptors = self.orb.detectAndCompute(grey, None)
        if descriptors is None:
            return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
        return np.float32([k.pt for k in keypoints]), descriptors

    def _good(self, query: np.ndarray, stored: np.ndarray) -> list[Any]:
        pairs = self.matcher.knnMatch(query, stored, k=2)
        return [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]

    def matches(self, data: bytes) -> set[str]:
        points, descriptors = self.describe(flat_rgb(data))
        if len(descriptors) < 4:
            return set()
        votes = np.zeros(len(self.names))
        for m in self._good(descriptors, self.all):
            if m.distance <= 64:
                votes[self.owner[m.trainIdx]] += 1
        found = set()
        for i in np.argsort(-votes)[:ORB_CANDIDATES]:
            stored_points, stored = self.features[self.names[i]]
            good = self._good(descriptors, stored) if votes[i] >= 3 else []
            if len(good) < 4:
                continue
            _, inliers = self.cv2.estimateAffinePartial2D(
                points[[m.queryIdx for m in good]], stored_points[[m.trainIdx for m in good]],
                method=self.cv2.RANSAC, ransacReprojThreshold=5.0)
            if inliers is not None and int(inliers.sum()) >= ORB_INLIERS:
                found.add(self.names[i])
        return found


# --------------------------------------------------------------------------- run
def hashing_cost(images: dict[str, bytes], rounds: int = 3) -> tuple[float, float, int]:
    """Seconds per image of PDQ (dihedral) alone and with the trimmed variant, and how
    many images get a trimmed variant."""
    decoded = [flat_rgb(d) for d in images.values()]
    alone, trimmed, extra = [], [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        for im in decoded:
            pdq_dihedral(im)
        alone.append(time.perf_counter() - started)
        started = time.perf_counter()
        extra = 0
        for im in decoded:
            pdq_dihedral(im)
            t = trim_margins(im)
            if t is not None:
                pdq_hash(t)
                extra += 1
        trimmed.append(time.perf_counter() - started)
    return min(alone) / len(decoded), min(trimmed) / len(decoded), extra


def orb_cost(images: dict[str, bytes], settings: Settings, rounds: int = 3
             ) -> tuple[float, float, float, float]:
    """Seconds per image of image.orb's describe, mean keypoints, indexed rows and blob
    KiB per image."""
    decoded = [flat_rgb(d) for d in images.values()]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        features = [describe(im, settings.orb_keypoints) for im in decoded]
        times.append(time.perf_counter() - started)
    n = len(decoded)
    return (min(times) / n, sum(len(f) for f in features) / n,
            sum(len(f.strongest(settings.orb_indexed)) for f in features) / n,
            sum(len(f.to_bytes()) for f in features) / n / 1024)


class NoText:
    name, version = "none", "0"

    def read(self, image: Image.Image) -> list[Any]:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=int, nargs="+", default=[16, 24, 31, 40, 48])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    files = image_files()
    originals = {n: files[n].read_bytes() for n in ORIGINALS}
    distractors = {n: files[n].read_bytes() for n in DISTRACTORS}
    ingested = {**originals, **distractors}
    queries = edited_copies(originals)
    try:
        orb: OrbStage | None = OrbStage(ingested)
    except ImportError:
        orb = None

    rows: dict[tuple[str, int], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="kenning-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), workers=2, log_json=False, _env_file=None,
                            orb_keypoints=ORB_KEYPOINTS)
        default = settings.pdq_threshold
        thresholds = sorted({*args.thresholds, default})
        kenning = Kenning(settings)
        try:
            kenning.resources._ocr = NoText()  # OCR plays no part in matching
            tenant_id = kenning.tenants.create_tenant("bench")
            who = Principal(tenant_id, kenning.tenants.create_key(tenant_id, "bench").key_id)
            kenning.start()
            started = time.perf_counter()
            ids = {kenning.ingest.ingest_bytes(who, data, IngestRequest(title=name)).asset_id:
                   name for name, data in ingested.items()}
            kenning.join(timeout_s=3600)
            ingest_s = time.perf_counter() - started
            service = kenning.similarity
            seconds: dict[str, list[float]] = {"pdq alone": [], PRODUCT: []}
            for name, edit, data in queries:
                plain, _ = pdq_hash(flat_rgb(data))
                extra = orb.matches(data) if orb else set()
                for t in thresholds:
                    clock = time.perf_counter()
                    alone = {ids[m.asset_id] for m in service._by_pdq(
                        who, plain, Thresholds(pdq=t), 200, exclude=None)
                        if m.evidence["variant"] != TRIMMED}
                    seconds["pdq alone"].append(time.perf_counter() - clock)
                    clock = time.perf_counter()
                    got = service.similar(who, SimilarRequest(threshold=t, limit=200),
                                          upload=data).matches
                    seconds[PRODUCT].append(time.perf_counter() - clock)
                    final = {ids[m.asset_id] for m in got if m.method == "pdq"}
                    sides = {"pdq alone": alone, "pdq + trim": final,
                             PRODUCT: {ids[m.asset_id] for m in got}}
                    if orb:
                        sides["+ ORB/RANSAC"] = final | extra
                    for side, found in sides.items():
                        row = rows.setdefault((side, t), {"tp": {}, "fp": 0})
                        row["tp"].setdefault(edit, []).append(name in found)
                        row["fp"] += len(found - {name})
        finally:
            kenning.close()

    alone_s, trim_s, trimmed = hashing_cost(ingested)
    orb_s, keypoints, indexed, kib = orb_cost(ingested, settings)
    print(f"{len(originals)} originals x {len(EDITS)} edits = {len(queries)} queries; "
          f"{len(ingested)} images ingested ({len(distractors)} distractors) in "
          f"{ingest_s:.1f} s; default threshold {default} bits\n")
    print("| side | threshold | " + " | ".join(EDITS) + " | recall | precision | FP |")
    print("|---|---:|" + "---:|" * (len(EDITS) + 3))
    order = ["pdq alone", "pdq + trim", PRODUCT, "+ ORB/RANSAC"]
    for (side, t), row in sorted(rows.items(), key=lambda kv: (kv[0][1], order.index(kv[0][0]))):
        hits = sum(sum(v) for v in row["tp"].values())
        precision = hits / (hits + row["fp"]) if hits + row["fp"] else 1.0
        cells = " | ".join(f"{sum(row['tp'][e])}/{len(row['tp'][e])}" for e in EDITS)
        mark = " (default)" if t == default else ""
        print(f"| {side} | {t}{mark} | {cells} | {hits / len(queries):.3f} | "
              f"{precision:.3f} | {row['fp']} |")
    print(f"\nhashing per image (one thread): PDQ dihedral {1000 * alone_s:.1f} ms; with "
          f"trimmed variant {1000 * trim_s:.1f} ms (x{trim_s / alone_s:.2f}); "
          f"{trimmed} of {len(ingested)} ingested images get the extra trimmed hash")
    print(f"image.orb per image (one thread): {1000 * orb_s:.1f} ms; {keypoints:.0f} "
          f"keypoints ({kib:.1f} KiB blob), {indexed:.0f} indexed fingerprint rows")
    for side, values in seconds.items():
        print(f"query p50 {side}: {1000 * float(np.median(values)):.1f} ms")
    if orb:
        print(f"ORB prototype: {1000 * orb.seconds_per_image:.1f} ms/image to describe, "
              f"{len(orb.all) / len(orb.names):.0f} descriptors/image "
              f"({32 * len(orb.all) / len(orb.names) / 1024:.1f} KiB)")


if __name__ == "__main__":
    main()
