"""Full-text (BM25) search behind the :class:`KeywordIndex` protocol."""

from kenning.stores.keyword.protocol import (
    FORMAT,
    TITLE_WEIGHT,
    KeywordDoc,
    KeywordHit,
    KeywordIndex,
)
from kenning.stores.keyword.sqlite_fts import SQLiteKeywordIndex
from kenning.stores.keyword.words import query_terms

__all__ = ["FORMAT", "TITLE_WEIGHT", "KeywordDoc", "KeywordHit", "KeywordIndex",
           "SQLiteKeywordIndex", "query_terms"]
