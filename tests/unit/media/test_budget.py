"""The process-wide pixel budget: concurrent decodes share it first come, first served."""

from __future__ import annotations

import threading

import pytest
from PIL import Image

from kenning.media import images
from kenning.media.budget import PixelBudget, decode_budget
from kenning.media.images import open_image
from kenning.settings import Settings
from tests.fixtures.decoding import Gate, png, run_threads, until


def test_an_image_larger_than_the_budget_decodes_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(decode_pixel_budget=64 * 64 - 13)  # not even one image fits
    gate = Gate(decode_budget(settings), callers=4)
    monkeypatch.setattr(images, "_load", gate.wrap(images._load))
    data = png()
    results = run_threads(4, lambda: open_image(data, settings), gate)
    assert [r.size for r in results if isinstance(r, Image.Image)] == [(64, 64)] * 4
    assert gate.peak == 1


def test_a_pipeline_decode_waits_for_room_instead_of_failing() -> None:
    settings = Settings(decode_pixel_budget=64 * 64 + 19, decode_wait_s=0.0)
    budget = decode_budget(settings)
    got: list[Image.Image] = []
    budget.acquire(64 * 64)
    worker = threading.Thread(target=lambda: got.append(open_image(png(), settings)))
    worker.start()
    until(lambda: budget.waiting == 1 or not worker.is_alive(), "the decode queued")
    assert budget.waiting == 1 and got == []  # queued, not refused
    budget.release(64 * 64)
    worker.join(timeout=30)
    assert [im.size for im in got] == [(64, 64)]


def test_budget_serves_waiters_in_arrival_order() -> None:
    budget = PixelBudget(100)
    order: list[str] = []
    budget.acquire(60)

    def take(name: str, pixels: int) -> None:
        with budget.hold(pixels):
            order.append(name)

    big = threading.Thread(target=take, args=("big", 100))
    big.start()
    until(lambda: budget.waiting == 1, "the big one queued")
    small = threading.Thread(target=take, args=("small", 10))  # would fit now, but is second
    small.start()
    until(lambda: budget.waiting == 2, "the small one queued")
    assert order == []
    budget.release(60)
    big.join(timeout=10)
    small.join(timeout=10)
    assert order == ["big", "small"]
