"""Words as the keyword indexes see them, and FTS5's snippet() for highlights: cut and
folded in Python the way SQLite FTS5's ``unicode61 remove_diacritics 2`` tokenizer does,
so an index that is not FTS5 (PostgreSQL) matches, ranks and highlights alike.

CJK. Chinese and Japanese put no spaces between words, and unicode61 would make a whole
run of Han/kana one token, found only by a query of exactly that run. Runs of Han,
Hiragana, Katakana and Hangul are therefore cut into overlapping character bigrams
("山火灾害" -> 山火 火灾 灾害; a lone character stays a unigram), for documents and
queries alike, here, so both indexes agree: a query finds a document holding its
bigrams, with no dictionary or model. Letters and digits next to such a run form words
of their own ("iPhone手机" -> iphone 手机). The embedded index hands FTS5 text with those
bigrams spelled out (:func:`index_text`), and cuts snippets of such documents here.
"""

from __future__ import annotations

import bisect
import functools
import html
import re
import unicodedata
from collections.abc import Iterable

WORD = re.compile(r"[^\W_]+")  # letter/digit runs, "_" splits
_CJK_CHARS = ("\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
              "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f")
_CJK = re.compile(f"[{_CJK_CHARS}]+")
_SENTENCE = re.compile(r"[.:][ \t\n\r]+(?=[^\W_])")  # ends where FTS5 sees a sentence start
_SNIPPET_TOKENS = 24  # as the embedded index's snippet()
_ELLIPSIS = "…"
MAX_LEXEME_BYTES = 2047  # a PostgreSQL tsvector lexeme's limit; longer words are cut there
MAX_QUERY_TERMS = 32  # bounds the cost of a pasted essay; 32 words is plenty to rank by


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


def spans(body: str) -> list[tuple[int, int]]:
    """Where each word of ``body`` lies, in order (CJK bigrams overlap)."""
    if not _CJK.search(body):
        return [m.span() for m in WORD.finditer(body)]
    out: list[tuple[int, int]] = []
    for m in WORD.finditer(body):
        out += _pieces(m.group(), m.start()) if _CJK.search(m.group()) else [m.span()]
    return out


def _pieces(word: str, at: int) -> list[tuple[int, int]]:
    """A word holding CJK: its other letter runs, and its CJK runs as bigrams."""
    out, left = [], 0
    for run in _CJK.finditer(word):
        a, z = run.span()
        if a > left:
            out.append((at + left, at + a))
        out += [(at + a, at + z)] if z - a == 1 else [(at + i, at + i + 2)
                                                       for i in range(a, z - 1)]
        left = z
    if left < len(word):
        out.append((at + left, at + len(word)))
    return out


def words(body: str) -> list[str]:
    """The folded words of ``body``, in order."""
    if not body.isascii():
        return [fold(body[a:z]) for a, z in spans(body)]
    words: list[str] = WORD.findall(body.lower())  # the common case, at C speed
    if max(map(len, words), default=0) > MAX_LEXEME_BYTES:
        words = [w[:MAX_LEXEME_BYTES] for w in words]
    return words


def has_cjk(body: str) -> bool:
    """Whether ``body`` holds text cut into bigrams."""
    return _CJK.search(body) is not None


def index_text(body: str) -> str:
    """``body`` as FTS5 should tokenize it: its CJK bigrams spelled out as words."""
    if not has_cjk(body):
        return body
    return WORD.sub(lambda m: " ".join(m.group()[a - m.start():z - m.start()]
                                       for a, z in _pieces(m.group(), m.start()))
                    if _CJK.search(m.group()) else m.group(), body)


def query_terms(query: str) -> list[str]:
    """The distinct folded words of ``query`` (NFKC first, as documents), in order, at
    most :data:`MAX_QUERY_TERMS`."""
    return list(dict.fromkeys(words(unicodedata.normalize("NFKC", query))))[:MAX_QUERY_TERMS]


def highlight(text: str, terms: Iterable[str]) -> str:
    """The highlight of a document of ``text`` found by ``terms`` (a hit's ``terms``):
    what a search returns, cut later for just the hits shown."""
    return snippet(unicodedata.normalize("NFKC", text), set(terms))


def snippet(body: str, terms: set[str]) -> str:
    """FTS5's ``snippet()`` (24 words, ``…``) over ``body``, HTML-escaped, with matched
    words in ``<mark>``: the window holding the most distinct terms, centred on them,
    or starting at a sentence when that scores as well. Overlapping or touching marks
    (CJK bigrams) merge into one."""
    places = spans(body)
    found = [(i, t) for i, (a, z) in enumerate(places) if (t := fold(body[a:z])) in terms]
    hits = [i for i, _ in found]
    size, n = len(places), _SNIPPET_TOKENS
    opens = _SENTENCE.finditer(body) if size > n else ()
    sentences = [0, *(bisect.bisect_left(places, (m.end(),)) for m in opens)]
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
    left = places[start][0] if start > 0 else 0
    right = len(body) if whole_tail else places[start + n - 1][1]
    out = [_ELLIPSIS] if start > 0 else []
    for i in hits[bisect.bisect_left(hits, start):bisect.bisect_left(hits, start + n)]:
        a, z = places[i]
        if a <= left and out and out[-1] == "</mark>":  # a bigram overlapping the last
            out[-1:] = [html.escape(body[left:z]), "</mark>"] if z > left else ["</mark>"]
        else:
            out += [html.escape(body[left:a]), "<mark>", html.escape(body[a:z]), "</mark>"]
        left = max(left, z)
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
