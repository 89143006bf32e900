"""Reasons in words: what a reader sees next to a recommended story.

Every :class:`~kenning.services.recommend.reasons.Reason` a candidate source attaches has a
sentence here, built from its evidence (titles of the stories it names are looked up by
the caller): "because you read “Bushfires near Sydney”", "from ada, an author you
follow", "popular in German this week". A reason code no rule knows still reads, as
``source: kind``, so no item is ever served without an explanation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kenning.services.recommend.reasons import Reason

__all__ = ["LANGUAGES", "explain", "language_name", "story_ids"]

LANGUAGES = {
    "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan", "cs": "Czech",
    "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "et": "Estonian", "fa": "Persian", "fi": "Finnish", "fr": "French", "ga": "Irish",
    "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian",
    "ms": "Malay", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sr": "Serbian",
    "sv": "Swedish", "sw": "Swahili", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian",
    "ur": "Urdu", "vi": "Vietnamese", "zh": "Chinese",
}
"""English names of ISO 639-1 codes (a code not listed is shown as itself)."""

Titles = Mapping[str, str | None]


def language_name(code: str) -> str:
    return LANGUAGES.get(code.lower(), code)


def story_ids(reasons: list[Reason]) -> set[str]:
    """The stories reasons name (their titles go into the sentences)."""
    return {v for r in reasons if isinstance(v := r.evidence.get("because_of"), str)}


def _title(titles: Titles, asset_id: object) -> str | None:
    if not isinstance(asset_id, str):
        return None
    title = titles.get(asset_id)
    if not title or not title.strip():
        return None
    title = " ".join(title.split())
    return f"“{title[:77]}…”" if len(title) > 78 else f"“{title}”"


def _window(evidence: dict[str, Any]) -> str:
    days = evidence.get("window_days")
    if days == 7:
        return "this week"
    if days == 1:
        return "today"
    return f"in the last {days:g} days" if isinstance(days, int | float) else "lately"


def _content(e: dict[str, Any], titles: Titles) -> str:
    title = _title(titles, e.get("because_of"))
    return f"because you read {title}" if title else "close to what you read"


def _collaborative(e: dict[str, Any], titles: Titles) -> str:
    title = _title(titles, e.get("because_of"))
    return (f"readers of {title} also read this" if title
            else "readers with tastes like yours read this")


def _co_engagement(e: dict[str, Any], titles: Titles) -> str:
    title = _title(titles, e.get("because_of"))
    return f"often read together with {title}" if title else "often read together with " \
        "what you read"


def _follows(e: dict[str, Any], titles: Titles) -> str:
    author = e.get("author_id")
    return f"from {author}, an author you follow" if author else "from an author you follow"


def _followed_engaged(e: dict[str, Any], titles: Titles) -> str:
    who = e.get("author_id")
    return f"read by {who}, whom you follow" if who else "read by someone you follow"


def _trending(e: dict[str, Any], titles: Titles) -> str:
    count = e.get("engagements")
    counted = f" ({count} engagements)" if isinstance(count, int) and count > 0 else ""
    return f"trending {_window(e)}{counted}"


def _fresh(e: dict[str, Any], titles: Titles) -> str:
    return "new: published in the last few days"


def _popular(e: dict[str, Any], titles: Titles) -> str:
    where = []
    if isinstance(topic := e.get("topic"), str):
        where.append(f"on {topic}")
    if isinstance(language := e.get("language"), str):
        where.append(f"in {language_name(language)}")
    return " ".join(["popular", *where, _window(e)])


def _new_story(e: dict[str, Any], titles: Titles) -> str:
    title = _title(titles, e.get("because_of"))
    return f"a new story close to {title}" if title else "a new story close to what you read"


_RULES: dict[str, Callable[[dict[str, Any], Titles], str]] = {
    "content:similar": _content,
    "collaborative:co_engagement": _co_engagement,
    "social:follows": _follows,
    "social:followed_engaged": _followed_engaged,
    "trending:engagement": _trending,
    "fresh:new": _fresh,
    "cold_start:popular": _popular,
    "cold_start:new_story": _new_story,
}


def explain(reason: Reason, titles: Titles) -> str:
    """One sentence for one reason (``titles``: asset id -> title of the stories named)."""
    rule = _RULES.get(reason.code)
    if rule is None and reason.source == "collaborative":
        rule = _collaborative  # ease, als, bpr: the model's name is the kind
    if rule is None:
        return f"{reason.source}: {reason.kind}"
    return rule(reason.evidence, titles)
