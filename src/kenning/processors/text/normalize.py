"""text.normalize: bytes of a text asset -> clean Unicode text (the ``text`` artifact)."""

from __future__ import annotations

import re
import unicodedata

from kenning.media.kinds import MediaKind
from kenning.pipeline.processor import SOURCE, BaseProcessor, StageInput, StageOutput

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_BLANKS = re.compile(r"\n{3,}")


def normalize_text(raw: str) -> str:
    """NFC, no control characters, single spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", raw.replace("\r\n", "\n").replace("\r", "\n"))
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def guess_title(text: str, limit: int = 200) -> str | None:
    """The first line, when it reads like a headline (short, followed by more text)."""
    first, _, rest = text.partition("\n")
    if first and len(first) <= limit and rest.strip():
        return first.strip()
    return None


class NormalizeText(BaseProcessor):
    name = "text.normalize"
    version = "1"
    media = frozenset({MediaKind.TEXT})
    requires = frozenset({SOURCE})
    produces = frozenset({"text"})
    queue = "text"
    cacheable = False

    def process_one(self, item: StageInput) -> StageOutput:
        raw = item.blob().decode("utf-8-sig", errors="replace")
        text = normalize_text(raw)
        title = guess_title(text)
        return StageOutput(
            artifacts={"text": {"text": text, "source": "body", "title": title}},
            asset_metadata={"chars": len(text)},
            title=title,
        )
