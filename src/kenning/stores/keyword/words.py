"""Words as the keyword indexes see them, and FTS5's snippet() for highlights: cut and
folded in Python the way SQLite FTS5's ``unicode61 remove_diacritics 2`` tokenizer does,
so an index that is not FTS5 (PostgreSQL) matches, ranks and highlights alike."""

from __future__ import annotations

import bisect
import functools
import html
import re
import unicodedata

WORD = re.compile(r"[^\W_]+")  # letter/digit runs, "_" splits
_SENTENCE = re.compile(r"[.:][ \t\n\r]+(?=[^\W_])")  # ends where FTS5 sees a sentence start
_SNIPPET_TOKENS = 24  # as the embedded index's snippet()
_ELLIPSIS = "…"
MAX_LEXEME_BYTES = 2047  # a PostgreSQL tsvector lexeme's limit; longer words are cut there


@functools.lru_cache(maxsize=1 << 16)
def fold(word: str) -> str:
    """``word`` folded as FTS5's ``unicode61 remove_diacritics 2`` folds it, cut to what
    a tsvector lexeme may hold."""
    if word.isascii():
        folded = word.lower()
    else:
        # As FTS5: accents go from Latin letters only (и is not й, か is not が), a final
        # sigma is a sigma, and there is no full case folding (ß is not ss).
        kept: list[str] = []
        for ch in unicodedata.normalize("NFD", word.lower().replace("\u03c2", "\u03c3")):
            if not ("\u0300" <= ch <= "\u036f" and kept and kept[-1] < "\u0250"):
                kept.append(ch)
        folded = unicodedata.normalize("NFC", "".join(kept))
    if len(folded) <= MAX_LEXEME_BYTES // 4:  # 4: UTF-8's widest character
        return folded
    return folded.encode()[:MAX_LEXEME_BYTES].decode("utf-8", "ignore")


def words(body: str) -> list[str]:
    """The folded words of ``body``, in order."""
    if not body.isascii():
        return list(map(fold, WORD.findall(body)))
    words: list[str] = WORD.findall(body.lower())  # the common case, at C speed
    if max(map(len, words), default=0) > MAX_LEXEME_BYTES:
        words = [w[:MAX_LEXEME_BYTES] for w in words]
    return words



def snippet(body: str, terms: set[str]) -> str:
    """FTS5's ``snippet()`` (24 words, ``…``) over ``body``, HTML-escaped, with matched
    words in ``<mark>``: the window holding the most distinct terms, centred on them,
    or starting at a sentence when that scores as well."""
    spans = [m.span() for m in WORD.finditer(body)]
    found = [(i, t) for i, (a, z) in enumerate(spans) if (t := fold(body[a:z])) in terms]
    hits = [i for i, _ in found]
    size, n = len(spans), _SNIPPET_TOKENS
    opens = _SENTENCE.finditer(body) if size > n else ()
    sentences = [0, *(bisect.bisect_left(spans, (m.end(),)) for m in opens)]
    window = functools.cache(lambda pos: _window(found, hits, pos, n))
    best, start = 0, 0
    for pos in hits:
        score, first, last = window(pos)
        if score > best:
            best = score
            start = max(0, min(first - (n - (last - first)) // 2, size - n))
        if size > n:
            opening = sentences[bisect.bisect_right(sentences, pos) - 1]
            if opening < pos:
                score = window(opening)[0] + (120 if opening == 0 else 100)
                if score > best:
                    best, start = score, opening
    whole_tail = start + n >= size
    left = spans[start][0] if start > 0 else 0
    right = len(body) if whole_tail else spans[start + n - 1][1]
    out = [_ELLIPSIS] if start > 0 else []
    for i in hits[bisect.bisect_left(hits, start):bisect.bisect_left(hits, start + n)]:
        a, z = spans[i]
        out += [html.escape(body[left:a]), "<mark>", html.escape(body[a:z]), "</mark>"]
        left = z
    out.append(html.escape(body[left:right]))
    if not whole_tail:
        out.append(_ELLIPSIS)
    return "".join(out)


def _window(found: list[tuple[int, str]], hits: list[int], pos: int,
            n: int) -> tuple[int, int, int]:
    """Score of the ``n`` words from ``pos`` (1000 a distinct term, 1 a repeat), its
    first hit and the end of its last."""
    inside = found[bisect.bisect_left(hits, pos):bisect.bisect_left(hits, pos + n)]
    if not inside:
        return 0, pos, pos
    distinct = len({term for _, term in inside})
    return 999 * distinct + len(inside), inside[0][0], inside[-1][0] + 1
