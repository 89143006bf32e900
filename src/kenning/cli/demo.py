"""``kenning demo``: a server, the real demo corpus ingested, and where to look.

The corpus is news, images, and real video and voice recordings
(:data:`kenning.demo.corpus.DEMO_VIDEOS`, alsa-utils' WAVs); the printout shows a
moment found by a word said in a video, and a matched video pair once video matching
(``video_pdq``) finds one.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from kenning.cli.client import ApiError, Client, resolve_key, wait_ready
from kenning.cli.render import span
from kenning.cli.workers import die_with_parent
from kenning.settings import Settings

console = Console(stderr=True)

# German on purpose: the corpus is English, the embedding space is shared.
SAMPLE_QUERY = "Buschbrände bedrohen Häuser in der Nähe von Sydney"
SPOKEN_WORD = "petty"
"""Said in Megamind.avi at 0:09 ("Well, that seems kind of petty, don't you think?");
Whisper tiny.en hears it."""
PAIR_QUERY = "carphone_pristine.mp4"
"""The demo video whose near-duplicate (carphone_distorted.mp4) video matching finds."""


def _wait_idle(client: Client, timeout_s: float = 1800) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    with console.status("processing (OCR, speech, shots, embeddings, hashes)...") as status:
        while time.monotonic() < deadline:
            queues = client.get("/v1/admin/queues")
            waiting = sum(q["ready"] + q["delayed"] + q["in_flight"] for q in queues)
            status.update(f"processing: {waiting} stages waiting")
            if waiting == 0:
                return {q["queue"]: q["dead"] for q in queues}
            time.sleep(1)
    raise RuntimeError("demo corpus still processing; check `kenning status`")


def run_demo(settings: Settings, *, articles: int, keep_serving: bool) -> int:
    from kenning.cli.main import ingest_items
    from kenning.demo.corpus import write_demo_folder

    settings.ensure_dirs()
    media_dir = settings.data_dir / "demo-media"
    console.print(f"fetching the demo corpus into {media_dir} ...")
    folder = write_demo_folder(media_dir, articles=articles, images=True, av=True)
    url = f"http://{settings.host}:{settings.port}"
    settings.api_url = url
    log_path = settings.data_dir / "server.log"
    console.print(f"starting kenning serve on {url} (log: {log_path})")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kenning.cli.main", "serve", "--data-dir",
             str(settings.data_dir), "--host", settings.host, "--port", str(settings.port)],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )
    # SIGTERM would end this process without its finally: make it stop the server too.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        wait_ready(url, alive=lambda: proc.poll() is None)
        client = Client(settings)
        # Audio and video first, in one batch whose answer names each asset: their
        # stages (speech, shots, OCR) take longest, and the printout needs their ids.
        av_ids = ingest_av(client, [*folder.videos, *folder.audio])
        items: list[str | Path] = [*folder.news, *folder.reuters, *folder.images]
        # In batches (POST /v1/assets/batch): one transaction and one dispatch each;
        # smaller than the server allows, so four uploads overlap and the bar moves.
        counts = ingest_items(client, items, parallel=4,
                              batch_size=min(32, settings.max_batch_items))
        counts["new"] += len(av_ids)
        counts["rejected"] += len(folder.videos) + len(folder.audio) - len(av_ids)
        dead = _wait_idle(client)
        key = resolve_key(settings)
        sample = client.post("/v1/search", {"query": SAMPLE_QUERY, "limit": 3})
        console.print(f"\ningested: {counts}; dead letters per queue: {dead}")
        console.print(f"\n[bold]Kenning is running at {url}[/bold]  (API docs: {url}/docs)",
                      soft_wrap=True)
        console.print(f"API key: {key}  (saved in {settings.bootstrap_key_path})", soft_wrap=True)
        console.print("Sample query (German, finds English news semantically):")
        console.print(
            f"  curl -s {url}/v1/search -H 'Authorization: Bearer {key}' "
            "-H 'Content-Type: application/json' "
            f"-d '{{\"query\": \"{SAMPLE_QUERY}\", \"mode\": \"hybrid\"}}'",
            soft_wrap=True,
        )
        for hit in sample["hits"]:
            console.print(f"  {hit['score']:.4f}  {hit.get('title') or hit['asset_id']}",
                          soft_wrap=True)
        console.print("Words printed in an image (OCR) are searchable too:")
        console.print(f"  .venv/bin/kenning search 'region segmentation markers' "
                      f"--data-dir {settings.data_dir}", soft_wrap=True)
        names = {asset_id: name for name, asset_id in av_ids.items()}
        for line in moment_lines(client, names):
            console.print(line, soft_wrap=True)
        if "Megamind.avi" in av_ids:
            console.print(f"  .venv/bin/kenning segments {av_ids['Megamind.avi']} "
                          f"--data-dir {settings.data_dir}", soft_wrap=True)
        # Video matching (method video_pdq, services/similarity.py): printed once it
        # finds the carphone pair; nothing otherwise.
        for line in video_pair_lines(client, av_ids):
            console.print(line, soft_wrap=True)
        # Readers: 50 pseudonymous readers' week of reading, then one reader's
        # recommendations with their reasons (kenning.demo.readers).
        for line in reader_lines(client, url, key):
            console.print(line, soft_wrap=True)
        if not keep_serving:
            return 0
        console.print("\nserving; press Ctrl-C to stop")
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def ingest_av(client: Client, paths: list[Path]) -> dict[str, str]:
    """Upload the audio and video files in one batch; asset id by file name (files the
    server refused are named on the console and left out)."""
    if not paths:
        return {}
    try:
        results = client.ingest_files(paths)
    except ApiError as exc:
        console.print(f"[red]audio and video not ingested[/red]: {exc.code}: {exc.message}")
        return {}
    ids: dict[str, str] = {}
    for path, result in zip(paths, results, strict=True):
        accepted = result.get("accepted")
        if accepted:
            ids[path.name] = str(accepted["asset_id"])
        else:
            console.print(f"[red]rejected[/red] {path.name}: {result['error']['code']}")
    return ids


def moment_lines(client: Client, names: dict[str, str]) -> list[str]:
    """A moment inside a video found by a word said there: asset, mm:ss and what is
    said (none when no audio or video hit has a time)."""
    found = client.post("/v1/search", {"query": SPOKEN_WORD, "mode": "keyword", "limit": 1,
                                       "filters": {"kind": ["video", "audio"]}})
    hit: dict[str, Any] | None = next(iter(found["hits"]), None)
    if hit is None or hit.get("start_s") is None:
        return []
    name = names.get(hit["asset_id"]) or hit.get("title") or hit["kind"]
    return [f"A moment found by a spoken word ({SPOKEN_WORD!r}, {hit['segment_kind']}):",
            f"  {hit['asset_id']} ({name})  {span(hit['start_s'], hit['end_s'])}  "
            f"\"{' '.join((hit.get('text') or '').split())}\""]


def video_pair_lines(client: Client, av_ids: dict[str, str]) -> list[str]:
    """The matched video pair: what ``POST /v1/similar`` answers for
    carphone_pristine.mp4 by the ``video_pdq`` method (none until video matching finds
    it, or when the server cannot answer for a video)."""
    query = av_ids.get(PAIR_QUERY)
    if query is None:
        return []
    try:
        found = client.post("/v1/similar", {"asset_id": query})
    except ApiError:
        return []
    match = next((m for m in found.get("matches", []) if m.get("method") == "video_pdq"),
                 None)
    if match is None:
        return []
    names = {asset_id: name for name, asset_id in av_ids.items()}
    evidence = match.get("evidence") or {}
    query_at = span(evidence.get("query_start_s"), evidence.get("query_end_s"))
    match_at = span(evidence.get("match_start_s"), evidence.get("match_end_s"))
    return ["A matched video pair (video_pdq):",
            f"  {PAIR_QUERY} {query_at} ~ {names.get(match['asset_id'], match['asset_id'])} "
            f"{match_at}  score {match['score']:.3f}"]


def topic_pools(client: Client, per_topic: int = 12) -> dict[str, list[str]]:
    """Each demo topic's stories: what a semantic search for it finds among the texts."""
    from kenning.demo.readers import DEMO_TOPICS

    pools = {}
    for topic, query in DEMO_TOPICS.items():
        found = client.post("/v1/search", {"query": query, "mode": "semantic",
                                           "limit": per_topic,
                                           "filters": {"kind": ["text"]}})
        pools[topic] = list(dict.fromkeys(h["asset_id"] for h in found["hits"]))
    return pools


def reader_lines(client: Client, url: str, key: str | None, limit: int = 5) -> list[str]:
    """Seed the demo readers' events (POST /v1/events), ask for one reader's
    recommendations, log their impressions with the request id, and say what was
    read, what is recommended and why (nothing when the server cannot recommend)."""
    from kenning.demo.readers import reader_events, reader_id

    started = time.perf_counter()
    pools = topic_pools(client)
    events = reader_events(pools, now=datetime.now(UTC))
    if not events:
        return []
    counts = {"accepted": 0, "duplicates": 0}
    for at in range(0, len(events), 500):
        done = client.post("/v1/events", {"events": events[at:at + 500]})
        counts = {k: counts[k] + done[k] for k in counts}
    reader = reader_id(0)
    try:
        found = client.get(f"/v1/users/{reader}/recommendations", limit=limit)
    except ApiError as exc:
        return [f"{len(events)} reader events recorded; no recommendations: {exc.code} "
                f"({exc.message})"]
    shown_at = datetime.now(UTC).isoformat()
    client.post("/v1/events", {"events": [{
        "event_id": f"demo-{found['request_id']}-{i['position']}", "type": "impression",
        "reader_id": reader, "asset_id": i["asset_id"], "surface": found["surface"],
        "position": i["position"], "request_id": found["request_id"], "at": shown_at}
        for i in found["items"]]})
    seconds = time.perf_counter() - started
    read = [e["asset_id"] for e in events if e["reader_id"] == reader and e["type"] == "read"]
    lines = [f"Readers: {len({e['reader_id'] for e in events})} pseudonymous readers, "
             f"{counts['accepted']} events recorded ({counts['duplicates']} already there), "
             f"in {seconds:.1f} s. {reader} read {len(read)} stories; recommended next "
             f"({found['policy']}):"]
    for item in found["items"]:
        lines.append(f"  {item['position'] + 1}. {item.get('title') or item['asset_id']}")
        lines.append(f"     {'; '.join(r['text'] for r in item['reasons'][:2])}")
    lines.append(f"  curl -s '{url}/v1/users/{reader}/recommendations?limit={limit}' "
                 f"-H 'Authorization: Bearer {key}'")
    return lines


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
