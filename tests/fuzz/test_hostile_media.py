"""Image-looking uploads with lying headers: declared dimensions of 0, 1 or billions,
truncated files, random bytes behind a magic prefix. Refused with a 4xx and a stable
code (``corrupt_media``, ``image_too_large``, ``unsupported_media_type``), never a 5xx;
what is accepted stays readable."""

from __future__ import annotations

import pytest
from hypothesis import given

from tests.fixtures import media
from tests.fuzz import strategies as hs
from tests.fuzz.live import (
    LIMITS,
    LiveServer,
    Seeded,
    assert_clean,
    assert_healthy,
    assert_stored_asset_reads,
    describe,
    error_code,
    fuzz_settings,
)

pytestmark = pytest.mark.slow

FUZZ = fuzz_settings(60)
MAX_PIXELS = LIMITS["KENNING_MAX_IMAGE_PIXELS"]


@pytest.fixture(scope="module")
def tenant(live: LiveServer) -> tuple[dict[str, str], Seeded]:
    headers = live.new_tenant("media")
    return headers, live.seed(headers)


@pytest.mark.parametrize("route", ["/v1/assets", "/v1/similar"])
def test_lying_image_headers(
    live: LiveServer, tenant: tuple[dict[str, str], Seeded], route: str
) -> None:
    headers, _ = tenant

    @FUZZ
    @given(data=hs.media_files)
    def run(data: bytes) -> None:
        offset = live.log_offset()
        r = live.request("POST", route, headers=headers, files={"file": ("upload.jpg", data)})
        assert_clean(live, r, offset)
        assert_stored_asset_reads(live, route, r, headers)

    run()
    assert_healthy(live)


PNG_CASES = [
    (0, 0, 422, "corrupt_media"), (0, 10, 422, "corrupt_media"), (10, 0, 422, "corrupt_media"),
    (2**31 - 1, 1, 413, "image_too_large"), (2**32 - 1, 2**32 - 1, None, None),
    (50_000, 50_000, 413, "image_too_large"), (1, 20_001, 413, "image_too_large"),
    (2_001, 2_001, 413, "image_too_large"),
]


@pytest.mark.parametrize(("width", "height", "status", "code"), PNG_CASES,
                         ids=[f"{w}x{h}" for w, h, _, _ in PNG_CASES])
@pytest.mark.parametrize("route", ["/v1/assets", "/v1/similar"])
def test_png_declared_dimensions(
    live: LiveServer, tenant: tuple[dict[str, str], Seeded], route: str,
    width: int, height: int, status: int | None, code: str | None,
) -> None:
    headers, _ = tenant
    offset = live.log_offset()
    r = live.request("POST", route, headers=headers,
                     files={"file": ("bomb.png", hs.png(width, height))})
    assert_clean(live, r, offset)
    if status is None:  # beyond the PNG spec (2**31-1): damaged or too large, both fine
        assert (r.status_code, error_code(r)) in ((422, "corrupt_media"),
                                                   (413, "image_too_large")), describe(r)
    else:
        assert (r.status_code, error_code(r)) == (status, code), describe(r)


@pytest.mark.parametrize("route", ["/v1/assets", "/v1/similar"])
@pytest.mark.parametrize(("name", "make", "status", "code"), [
    ("truncated.jpg", media.truncated_jpeg, 422, "corrupt_media"),
    ("bomb.png", lambda: media.png_bomb_header(50_000, 50_000), 413, "image_too_large"),
    ("header-only.jpg", lambda: hs.jpeg(640, 480), 422, "corrupt_media"),
    ("zero.gif", lambda: hs.gif(0, 0), 422, "corrupt_media"),
    ("huge.gif", lambda: hs.gif(65_535, 65_535), 413, "image_too_large"),
    ("huge.tif", lambda: hs.tiff(100_000, 100_000), 413, "image_too_large"),
], ids=["truncated-jpeg", "png-bomb", "jpeg-no-scan", "gif-0x0", "gif-65535", "tiff-1e5"])
def test_known_hostile_images(
    live: LiveServer, tenant: tuple[dict[str, str], Seeded], route: str, name: str,
    make: object, status: int, code: str,
) -> None:
    headers, _ = tenant
    offset = live.log_offset()
    r = live.request("POST", route, headers=headers,
                     files={"file": (name, make())})  # type: ignore[operator]
    assert_clean(live, r, offset)
    assert (r.status_code, error_code(r)) == (status, code), describe(r)
