"""Stopwords of a query's language, folded as the indexes fold words.

The lists are those of the ``stop-words`` package (33 languages, ISO 639-1 codes; part
of the ``text`` extra). A query's language, when the caller knows it, picks its list; when
it is ``None`` or a language without a list, a word is a stopword when it is one in *any*
listed language (the union): an undetected short query like "Waldbrände in Australien"
still loses its "in". The union also holds content words of some language ("die",
"war", "fire" is in the English list), which is why the indexes never let stopwords
decide alone, but only drop them from the looser passes of a search (see
:func:`content_terms`): a document holding every word of the query, stopwords too,
still ranks first.

Documents keep every word; only queries are cut.
"""

from __future__ import annotations

import functools
import logging

from kenning.stores.keyword.words import query_terms

log = logging.getLogger(__name__)

_ALIASES = {"no": "nb", "nn": "nb", "zh-cn": "zh", "zh-tw": "zh"}


@functools.cache
def stopwords(language: str | None) -> frozenset[str]:
    """The folded stopwords of ``language`` (ISO 639-1), or of every listed language
    when ``language`` is ``None`` or has no list; empty when the package is missing."""
    try:
        import stop_words  # type: ignore[import-untyped]
    except ImportError:
        log.warning("keyword search keeps stopwords: the stop-words package is missing "
                    "(pip install 'kenning[text]')")
        return frozenset()
    listed: dict[str, str] = stop_words.LANGUAGE_MAPPING
    code = None if language is None else language.strip().lower()
    code = _ALIASES.get(code or "", code)
    if code is not None and code not in listed:
        code = code.split("-")[0]
    codes = [code] if code in listed else sorted(listed)
    folded: set[str] = set()
    for each in codes:
        for word in stop_words.get_stop_words(each):
            terms = query_terms(word)
            if len(terms) == 1:  # "don't" is two words, none a stopword alone
                folded.add(terms[0])
    return frozenset(folded)


def content_terms(terms: list[str], language: str | None) -> list[str]:
    """``terms`` less the stopwords of ``language``; all of them when every one is a
    stopword (a query of stopwords only searches its words)."""
    stop = stopwords(language)
    kept = [t for t in terms if t not in stop]
    return kept or terms


def passes(terms: list[str], language: str | None) -> list[tuple[str, list[str]]]:
    """The passes of a search, each ``(op, terms)`` with ``op`` ``"&"`` (every term) or
    ``"|"`` (any term), run in order, each adding documents the earlier ones missed:
    every word but stopwords (every word when all are stopwords); then any of those.

    No pass asks for the stopwords of a query that has other words. A pass requiring them
    too (tried first, once) only lifted the documents that also hold them above the rest
    of the same content-word matches, a lift BM25 itself gives near-universal words
    almost no weight for; and their posting lists (every document holds "the") made its
    cost grow with the size of the index.
    """
    content = content_terms(terms, language)
    out = [("&", content)]
    if len(content) > 1:
        out.append(("|", content))
    return out
