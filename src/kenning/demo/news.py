"""Real news articles: the ABC news of gensim's Lee corpus and a Reuters-21578 sample.

* ``gensim`` wheel (:data:`GENSIM_VERSION`): ``gensim/test/test_data/lee_background.cor``,
  the 300 ABC (Australian Broadcasting Corporation) news articles of the Lee et al.
  (2005) background corpus, one article per line.
* Debian ``r-cran-tm`` (optional): ``tm/texts/{acq,crude}/reut-*.xml``, 70 articles of
  the Reuters-21578 collection. Needs ``apt-get``; when it fails the Reuters part is
  skipped with a logged reason.
"""

from __future__ import annotations

import functools
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kenning.demo.cache import CorpusError
from kenning.demo.debs import package_tree
from kenning.demo.wheels import fetch_wheel_members

__all__ = [
    "GENSIM_VERSION",
    "LEE_BACKGROUND_MEMBER",
    "LEE_SOURCE",
    "REUTERS_DEB",
    "REUTERS_SOURCE",
    "NewsArticle",
    "news_articles",
    "reuters_articles",
    "reuters_articles_or_reason",
]

logger = logging.getLogger(__name__)

#: Pinned gensim wheel that carries the Lee corpora (27.8 MB, cp311 manylinux x86_64).
GENSIM_VERSION = "4.4.0"
#: Member of the gensim wheel with the 300 ABC news articles, one per line.
LEE_BACKGROUND_MEMBER = "gensim/test/test_data/lee_background.cor"
#: Debian package with the Reuters-21578 sample.
REUTERS_DEB = "r-cran-tm"

LEE_SOURCE = "gensim lee_background.cor (ABC news)"
REUTERS_SOURCE = "Reuters-21578 (Debian r-cran-tm)"

_TITLE_MAX_CHARS = 80


@dataclass(frozen=True, slots=True)
class NewsArticle:
    """One real news article.

    Attributes:
        id: Stable identifier, e.g. ``lee-bg-0001`` (line number in the Lee file) or
            ``reuters-00242`` (Reuters NEWID).
        title: Headline; for the Lee corpus (which has none) the first sentence trimmed
            to about 80 characters.
        text: Full article text (the Lee text includes its first sentence).
        source: Where the article comes from, for provenance in demos and reports.
        topics: Topic labels where the source has them (Reuters: ``acq``, ``crude``, ...).
        published: ISO-8601 timestamp where the source has one (Reuters only).
    """

    id: str
    title: str
    text: str
    source: str
    topics: tuple[str, ...] = ()
    published: str | None = None


# --------------------------------------------------------------------------- Lee / ABC news

_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "st", "jr", "sr", "gen", "col", "lt", "sgt", "capt",
        "prof", "rev", "mt", "no", "inc", "co", "corp", "ltd", "vs", "sen", "gov", "rep",
        "maj", "brig", "cpl", "hon", "jan", "feb", "mar", "apr", "aug", "sep", "sept",
        "oct", "nov", "dec", "approx", "dept", "est", "fig",
    }
)  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s+[\"'(\[]?[A-Z0-9]|\s*$)")
_LAST_WORD = re.compile(r"([A-Za-z.]+)$")


def _first_sentence(text: str) -> str:
    """First sentence of ``text``, not fooled by ``Mr.``, ``U.S.`` or initials."""
    for match in _SENTENCE_END.finditer(text):
        word_match = _LAST_WORD.search(text[: match.start()])
        word = word_match.group(1).lower() if word_match else ""
        if (
            word in _ABBREVIATIONS
            or (len(word) == 1 and word.isalpha())
            or re.fullmatch(r"(?:[a-z]\.)+[a-z]", word)
        ):
            continue
        return text[: match.end()].strip()
    return text.strip()


def _headline(text: str, max_chars: int = _TITLE_MAX_CHARS) -> str:
    """The first sentence, cut at a word boundary to at most ``max_chars`` characters."""
    sentence = " ".join(_first_sentence(text).split())
    if len(sentence) <= max_chars:
        return sentence
    cut = sentence[: max_chars - 1]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "\u2026"


@functools.lru_cache(maxsize=4)
def _load_lee(path: str) -> tuple[NewsArticle, ...]:
    raw = Path(path).read_text(encoding="utf-8", errors="replace")
    articles: list[NewsArticle] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        text = " ".join(line.split())
        if not text:
            continue
        articles.append(
            NewsArticle(
                id=f"lee-bg-{number:04d}", title=_headline(text), text=text, source=LEE_SOURCE
            )
        )
    return tuple(articles)


def news_articles(limit: int | None = None) -> list[NewsArticle]:
    """The 300 real ABC news articles of gensim's ``lee_background.cor``.

    One article per line of the file; ids are ``lee-bg-NNNN`` by line number, the title
    is the article's first sentence trimmed to about 80 characters. Downloads the gensim
    wheel (about 28 MB) into the cache on first use.

    Args:
        limit: Return only the first ``limit`` articles (``None``: all 300).

    Raises:
        ValueError: When ``limit`` is negative.
        CorpusError: When the wheel cannot be fetched.
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    root = fetch_wheel_members("gensim", GENSIM_VERSION, LEE_BACKGROUND_MEMBER)
    articles = _load_lee(str(root / LEE_BACKGROUND_MEMBER))
    return list(articles if limit is None else articles[:limit])


# --------------------------------------------------------------------------- Reuters


def _clean(text: str) -> str:
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", text)


def _reuters_body(dateline: str, body: str) -> str:
    """Unwrap the wire text into paragraphs and drop the ``REUTER`` sign-off."""
    text = _clean(body).strip()
    text = re.sub(r"\s*\bREUTER\b\s*$", "", text, flags=re.IGNORECASE)
    paragraphs = [" ".join(part.split()) for part in re.split(r"\n\s{2,}", text)]
    paragraphs = [p for p in paragraphs if p]
    dateline = " ".join(_clean(dateline).split())
    if dateline and paragraphs:
        paragraphs[0] = f"{dateline} {paragraphs[0]}"
    return "\n\n".join(paragraphs)


def _reuters_date(raw: str) -> str | None:
    raw = raw.strip()
    for fmt in ("%d-%b-%Y %H:%M:%S.%f", "%d-%b-%Y %H:%M:%S"):
        try:
            return datetime.strptime(raw, fmt).isoformat()
        except ValueError:
            continue
    return None


@functools.lru_cache(maxsize=4)
def _load_reuters(root: str) -> tuple[NewsArticle, ...]:
    files = sorted(Path(root).rglob("texts/*/reut-*.xml"), key=lambda p: (p.parent.name, p.name))
    articles: list[NewsArticle] = []
    seen: set[str] = set()
    for path in files:
        try:
            doc = ET.parse(path).getroot()
        except ET.ParseError as exc:
            logger.warning("skipping unreadable Reuters file %s: %s", path.name, exc)
            continue
        title = " ".join(_clean(doc.findtext("TEXT/TITLE") or "").split())
        text = _reuters_body(doc.findtext("TEXT/DATELINE") or "", doc.findtext("TEXT/BODY") or "")
        if not title or not text:
            continue
        newid = doc.get("NEWID", "")
        article_id = f"reuters-{int(newid):05d}" if newid.isdigit() else f"reuters-{path.stem}"
        if article_id in seen:
            article_id = f"{article_id}-{path.parent.name}"
        seen.add(article_id)
        topics = tuple(d.text.strip() for d in doc.findall("TOPICS/D") if d.text and d.text.strip())
        articles.append(
            NewsArticle(
                id=article_id,
                title=title,
                text=text,
                source=REUTERS_SOURCE,
                topics=topics or (path.parent.name,),
                published=_reuters_date(doc.findtext("DATE") or ""),
            )
        )
    return tuple(articles)


def reuters_articles_or_reason() -> tuple[list[NewsArticle], str | None]:
    """All Reuters articles and ``None``, or ``[]`` and why they could not be had (logged)."""
    try:
        tree = package_tree(REUTERS_DEB)
    except CorpusError as exc:
        reason = f"Reuters-21578 sample unavailable ({exc})"
        logger.warning("%s", reason)
        return [], reason
    articles = list(_load_reuters(str(tree)))
    if not articles:
        reason = f"no reut-*.xml files found in the {REUTERS_DEB} package at {tree}"
        logger.warning("%s", reason)
        return [], reason
    return articles, None


def reuters_articles(limit: int | None = None) -> list[NewsArticle]:
    """The 70 Reuters-21578 articles (50 ``acq``, 20 ``crude``) of Debian ``r-cran-tm``.

    Optional data: fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``
    (or the standard library when dpkg is missing). When that fails, the reason is
    logged and an empty list is returned; nothing else depends on it.

    Args:
        limit: Return only the first ``limit`` articles (``None``: all).
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    articles, _ = reuters_articles_or_reason()
    return articles if limit is None else articles[:limit]
