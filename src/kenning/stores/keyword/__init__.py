"""Full-text (BM25) search behind the :class:`KeywordIndex` protocol."""

from kenning.stores.keyword.protocol import KeywordDoc, KeywordHit, KeywordIndex
from kenning.stores.keyword.sqlite_fts import SQLiteKeywordIndex, query_terms

__all__ = ["KeywordDoc", "KeywordHit", "KeywordIndex", "SQLiteKeywordIndex", "query_terms"]
