"""Media primitives at the bottom of the tree: kinds, sniffing by bytes, safe decoding.

Every layer above uses these; nothing here imports from above (only :mod:`kenning.errors`).
Import the submodules directly (:mod:`kenning.media.kinds`, :mod:`kenning.media.sniff`,
:mod:`kenning.media.limits`, :mod:`kenning.media.budget`, :mod:`kenning.media.images`):
this package re-exports nothing, so naming a media kind never loads an image library.
"""
