"""Text processors: normalise, chunk, language id, embeddings, keyword index, SimHash."""

from kenning.processors.text.chunk import ChunkText, chunk_text
from kenning.processors.text.embed import EmbedText
from kenning.processors.text.keyword import KeywordIndexText
from kenning.processors.text.language import DetectLanguage, detect_language
from kenning.processors.text.normalize import NormalizeText, normalize_text
from kenning.processors.text.simhash import SimHashText

__all__ = [
    "ChunkText",
    "DetectLanguage",
    "EmbedText",
    "KeywordIndexText",
    "NormalizeText",
    "SimHashText",
    "chunk_text",
    "detect_language",
    "normalize_text",
]
