"""``kenning demo``: a server, the real demo corpus ingested, and where to look."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from kenning.cli.client import Client, resolve_key, wait_ready
from kenning.cli.workers import die_with_parent
from kenning.settings import Settings

console = Console(stderr=True)

# German on purpose: the corpus is English, the embedding space is shared.
SAMPLE_QUERY = "Buschbrände bedrohen Häuser in der Nähe von Sydney"


def _wait_idle(client: Client, timeout_s: float = 1800) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    with console.status("processing (OCR, embeddings, hashes)...") as status:
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
    folder = write_demo_folder(media_dir, articles=articles, images=True)
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
        items: list[str | Path] = [*folder.news, *folder.reuters, *folder.images]
        # In batches (POST /v1/assets/batch): one transaction and one dispatch each;
        # smaller than the server allows, so four uploads overlap and the bar moves.
        counts = ingest_items(client, items, parallel=4,
                              batch_size=min(32, settings.max_batch_items))
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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
