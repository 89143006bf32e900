"""image.thumbnail: a JPEG preview whose longest side is ``settings.thumbnail_px``."""

from __future__ import annotations

import io

from PIL import Image

from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import BaseProcessor, StageInput, StageOutput
from kenning.processors.image.shared import decoded
from kenning.settings import Settings

__all__ = ["ThumbnailImage", "make_thumbnail"]


class ThumbnailImage(BaseProcessor):
    """Render a JPEG thumbnail (never upscaled) into ``blobs["thumbnail"]``."""

    name = "image.thumbnail"
    media = frozenset({MediaKind.IMAGE})
    requires = frozenset({"image.meta"})
    produces = frozenset({"image.thumbnail"})
    queue = "image"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        # The size is part of the output, so part of the cache key.
        self.version = f"1+{self.settings.thumbnail_px}px"

    def process_one(self, item: StageInput) -> StageOutput:
        image = decoded(item, self.settings)
        data, (width, height) = make_thumbnail(image, self.settings.thumbnail_px)
        artifact = {"width": width, "height": height, "mime": "image/jpeg", "bytes": len(data)}
        return StageOutput(artifacts={"image.thumbnail": artifact}, blobs={"thumbnail": data})


def make_thumbnail(
    image: Image.Image, max_side: int, quality: int = 85
) -> tuple[bytes, tuple[int, int]]:
    """JPEG bytes of ``image`` shrunk to fit ``max_side``, and the thumbnail's size.

    Transparent areas are flattened onto white, as JPEG has no alpha.
    """
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if thumb.mode != "RGB":
        rgba = thumb.convert("RGBA")
        thumb = Image.new("RGB", rgba.size, (255, 255, 255))
        thumb.paste(rgba, mask=rgba.getchannel("A"))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=quality, optimize=True)
    return buf.getvalue(), thumb.size
