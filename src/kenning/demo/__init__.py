"""Real demo media and evaluation data fetched from packages.

The public entry point is :mod:`kenning.demo.corpus`, which re-exports everything
(imported from there, not re-exported here, so that ``python -m kenning.demo.corpus``
runs without a double import). Behind it: :mod:`~kenning.demo.news` (ABC and Reuters
articles), :mod:`~kenning.demo.images` (sample images), :mod:`~kenning.demo.wheels` and
:mod:`~kenning.demo.debs` (package downloads) and :mod:`~kenning.demo.cache` (the cache).
"""
