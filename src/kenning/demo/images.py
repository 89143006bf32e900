"""Real sample images: the ``skimage/data`` folder of a pinned scikit-image wheel.

Photographs, scans and test images (astronaut, camera, coffee, chelsea, rocket, coins,
page, ...) in their original formats, fetched once into the cache by
:func:`kenning.demo.wheels.fetch_wheel_members`.
"""

from __future__ import annotations

from pathlib import Path

from kenning.demo.wheels import fetch_wheel_members

__all__ = [
    "IMAGE_SUFFIXES",
    "PILLOW_UNREADABLE_IMAGES",
    "SKIMAGE_DATA_PREFIX",
    "SKIMAGE_VERSION",
    "sample_images",
]

#: Pinned scikit-image wheel that carries ``skimage/data`` (13.7 MB, cp311 manylinux x86_64).
SKIMAGE_VERSION = "0.26.0"
#: Folder of the scikit-image wheel with the sample images.
SKIMAGE_DATA_PREFIX = "skimage/data/"

#: File name suffixes of ``skimage/data`` members that are images (the rest is code/arrays).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".webp"})
#: Images of the pinned scikit-image wheel that Pillow cannot open: ``multipage_rgb.tif``
#: is a 2x3-plane TIFF written by tifffile (``shape=(2,3,10,10)``, planar RGB).
PILLOW_UNREADABLE_IMAGES = frozenset({"multipage_rgb.tif"})


def sample_images(*, include_unreadable: bool = False) -> dict[str, Path]:
    """The real images of scikit-image's ``skimage/data`` folder, by file name.

    Keys are file names such as ``"astronaut.png"`` or ``"rocket.jpg"`` (sorted); only
    image files are listed (no ``.npy``, ``.npz``, ``.txt``, ``.xml`` or code). Downloads
    the scikit-image wheel (about 14 MB) into the cache on first use.

    Args:
        include_unreadable: Also list the files that Pillow cannot open
            (:data:`PILLOW_UNREADABLE_IMAGES`); by default every listed image decodes.

    Raises:
        CorpusError: When the wheel cannot be fetched.
    """
    root = fetch_wheel_members("scikit-image", SKIMAGE_VERSION, SKIMAGE_DATA_PREFIX)
    folder = root / SKIMAGE_DATA_PREFIX
    return {
        path.name: path
        for path in sorted(folder.iterdir())
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and (include_unreadable or path.name not in PILLOW_UNREADABLE_IMAGES)
    }
