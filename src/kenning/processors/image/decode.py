"""image.decode: the guarded full decode, dimensions and a readable EXIF subset."""

from __future__ import annotations

import math
from typing import Any

from PIL import Image

from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import SOURCE, BaseProcessor, StageInput, StageOutput
from kenning.processors.image.shared import original
from kenning.settings import Settings

__all__ = ["DecodeImage", "extract_exif"]

_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_BASE_TAGS = {0x010F: "Make", 0x0110: "Model", 0x0131: "Software", 0x0132: "DateTime"}
_EXIF_TAGS = {0x9003: "DateTimeOriginal", 0xA434: "LensModel"}
_ORIENTATION = 0x0112
_MAX_STRING = 256
# EXIF orientations 5-8 are rotated by 90 degrees: displayed width and height swap.
_SWAPS_SIDES = frozenset({5, 6, 7, 8})


class DecodeImage(BaseProcessor):
    """Decode under the ingest guards; record size, format, mode and EXIF."""

    name = "image.decode"
    version = "1"
    media = frozenset({MediaKind.IMAGE})
    requires = frozenset({SOURCE})
    produces = frozenset({"image.meta"})
    queue = "image"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    def process_one(self, item: StageInput) -> StageOutput:
        im = original(item, self.settings)
        exif = extract_exif(im)
        width, height = im.size
        if exif.get("Orientation") in _SWAPS_SIDES:
            width, height = height, width
        meta = {
            "width": width,
            "height": height,
            "format": im.format,
            "mode": im.mode,
            "exif": exif,
        }
        return StageOutput(
            artifacts={"image.meta": meta},
            asset_metadata={"width": width, "height": height, "format": im.format, "exif": exif},
        )


def extract_exif(im: Image.Image) -> dict[str, Any]:
    """A small, JSON-safe EXIF subset: camera, software, times, orientation, GPS.

    Width and height elsewhere are as displayed (after orientation). Malformed or
    hostile values are dropped rather than failing the stage.
    """
    try:
        exif = im.getexif()
    except Exception:
        return {}
    out: dict[str, Any] = {}
    for tag, key in _BASE_TAGS.items():
        _put_string(out, key, exif.get(tag))
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        sub = {}
    for tag, key in _EXIF_TAGS.items():
        _put_string(out, key, sub.get(tag))
    orientation = exif.get(_ORIENTATION)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        out["Orientation"] = orientation
    try:
        gps = exif.get_ifd(_GPS_IFD)
    except Exception:
        gps = {}
    lat = _gps_degrees(gps.get(2), gps.get(1), 90.0)
    lon = _gps_degrees(gps.get(4), gps.get(3), 180.0)
    if lat is not None and lon is not None:
        out["GPSLatitude"] = lat
        out["GPSLongitude"] = lon
    return out


def _put_string(out: dict[str, Any], key: str, value: object) -> None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        text = value.replace("\x00", "").strip()[:_MAX_STRING]
        if text:
            out[key] = text


def _gps_degrees(value: object, ref: object, bound: float) -> float | None:
    try:
        parts = [float(v) for v in value]  # type: ignore[attr-defined]
        if len(parts) != 3:
            return None
        degrees = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", errors="replace")
    if isinstance(ref, str) and ref.strip().upper()[:1] in ("S", "W"):
        degrees = -degrees
    if not math.isfinite(degrees) or abs(degrees) > bound:
        return None
    return round(degrees, 7)
