"""Lee-50 document similarity for each embedding backend that is installed here.

The Lee corpus (Lee, Pincombe and Welsh, 2005; shipped in the gensim wheel's test data):
50 ABC news documents, each pair rated for similarity by humans (mean rating, 0-1,
``similarities0-1.txt``, upper triangle). Each backend embeds the 50 documents as
Kenning embeds a text asset (normalised, chunked, the mean of its chunks' vectors:
:meth:`~kenning.services.similarity.SimilarityService.text_vector`'s definition) and the
score is Pearson's r between the 1,225 pairs' cosines and the human ratings (higher is
better; the literature's figures for LSA are about 0.6). Run::

    .venv/bin/python bench/bench_lee50.py [--backends use e5 minilm]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kenning.demo.news import GENSIM_VERSION
from kenning.demo.wheels import fetch_wheel_members
from kenning.errors import MissingExtra
from kenning.inference.embedding import (
    E5SmallBackend,
    EmbeddingBackend,
    SentenceTransformersBackend,
    UseMultilingualBackend,
)
from kenning.processors.text.chunk import chunk_texts
from kenning.processors.text.embed import mean_vector
from kenning.processors.text.normalize import normalize_text
from kenning.settings import Settings

DATA = "gensim/test/test_data/"


def lee50() -> tuple[list[str], np.ndarray]:
    """The 50 documents and the human ratings of their 1,225 pairs (i < j)."""
    root = fetch_wheel_members("gensim", GENSIM_VERSION, DATA + "lee.cor") / DATA
    docs = [line.strip() for line in (root / "lee.cor").read_text("latin-1").splitlines()
            if line.strip()]
    ratings_root = fetch_wheel_members("gensim", GENSIM_VERSION,
                                       DATA + "similarities0-1.txt") / DATA
    matrix = np.loadtxt(ratings_root / "similarities0-1.txt")
    assert len(docs) == 50 and matrix.shape == (50, 50), (len(docs), matrix.shape)
    return docs, matrix[np.triu_indices(50, k=1)]


def backends(names: list[str]) -> dict[str, EmbeddingBackend]:
    make = {
        "use": lambda: UseMultilingualBackend(threads=1),
        "e5": lambda: E5SmallBackend(threads=1),
        "minilm": lambda: SentenceTransformersBackend("all-MiniLM-L6-v2", threads=1),
    }
    return {name: make[name]() for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["use", "e5", "minilm"],
                        choices=["use", "e5", "minilm"])
    args = parser.parse_args()
    settings = Settings(_env_file=None)
    docs, human = lee50()
    chunked = [chunk_texts(normalize_text(d), settings.chunk_chars,
                           settings.chunk_overlap_chars) for d in docs]
    print("| backend | model | Pearson r (1,225 pairs) | seconds |")
    print("|---|---|---:|---:|")
    for name, backend in backends(args.backends).items():
        started = time.perf_counter()
        try:
            vectors = np.stack([mean_vector(backend.embed(chunks)) for chunks in chunked])
        except (MissingExtra, ImportError, OSError) as exc:
            print(f"| {name} | not available here: {str(exc)[:80]} | | |")
            continue
        cosines = (vectors @ vectors.T)[np.triu_indices(50, k=1)]
        r = float(np.corrcoef(cosines, human)[0, 1])
        print(f"| {name} | {backend.model_id} | {r:.3f} | "
              f"{time.perf_counter() - started:.1f} |")


if __name__ == "__main__":
    main()
