"""The ``kenning`` command. Commands stay thin: they call the API (through
:class:`~kenning.cli.client.Client`) or, for local administration, the same services the
API uses."""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kenning.cli.client import ApiError, Client, plan_batches
from kenning.cli.recs import recs
from kenning.cli.render import search_table, segments_table, similar_table, status_table
from kenning.inference.resources import native_threads_env
from kenning.settings import Settings

app = typer.Typer(help="Kenning: self-hosted media intelligence.", no_args_is_help=True)
dlq = typer.Typer(help="Dead-lettered work: list and redrive.", no_args_is_help=True)
db = typer.Typer(help="Metadata database.", no_args_is_help=True)
apikey = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")
app.add_typer(db, name="db")
app.add_typer(apikey, name="apikey")
app.add_typer(recs, name="recs")
console = Console(stderr=True)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Overrides KENNING_DATA_DIR.", show_default=False)
]
ApiUrl = Annotated[str | None, typer.Option("--api-url", help="Overrides KENNING_API_URL.")]


def _settings(data_dir: Path | None = None, api_url: str | None = None, **extra: Any) -> Settings:
    values: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    if api_url is not None:
        values["api_url"] = api_url
    settings = Settings(**values)
    # Before any command imports the stores or the models (numpy, faiss, onnxruntime):
    # OpenMP sizes the pools of threads other than the caller's from this variable only.
    native_threads_env(settings.model_threads)
    return settings


def _client(data_dir: Path | None, api_url: str | None) -> Client:
    return Client(_settings(data_dir, api_url))


def _fail(exc: ApiError) -> NoReturn:
    console.print(f"[red]error[/red] {exc.code}: {exc.message}")
    raise typer.Exit(2)


def _print(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Pipeline worker threads (per worker process).")] = None,
    worker_processes: Annotated[int | None, typer.Option(
        help="Pipeline worker processes beside the API (0: threads in the API process).",
    )] = None,
    api_only: Annotated[bool, typer.Option(
        "--api-only", help="No pipeline work in or beside this server: `kenning worker` "
        "processes elsewhere do it (the cluster profile: several servers, several workers, "
        "sharing the database, the broker and the blob store).")] = False,
) -> None:
    """Run the API and the pipeline workers (embedded profile), or the API alone."""
    import uvicorn

    from kenning.cli.workers import WorkerSupervisor, share_metrics

    if api_only:
        workers, worker_processes = 0, 0
    settings = _settings(data_dir, host=host, port=port, workers=workers,
                         worker_processes=worker_processes)
    processes = settings.resolved_worker_processes if settings.run_workers else 0
    if processes:
        share_metrics(settings.data_dir / ".metrics")  # before the metrics are defined

    from kenning.api.app import create_app
    from kenning.container import Kenning
    from kenning.observability.logging import configure_logging

    configure_logging(settings.log_level, json_lines=settings.log_json)
    kenning_app = Kenning(
        settings.model_copy(update={"workers": 0}) if processes else settings
    )
    application = create_app(kenning_app)
    supervisor = None
    if processes:
        supervisor = WorkerSupervisor(
            settings.data_dir, processes, threads=settings.workers,
            on_exit=kenning_app.reconciler.release_orphans,
        )
        kenning_app.supervisor = supervisor
    console.print(
        f"Kenning on http://{settings.host}:{settings.port} (docs: /docs), data in "
        f"{settings.data_dir.resolve()}, bootstrap key in {settings.bootstrap_key_path}"
        + (f", {processes} worker processes" if processes else "")
    )
    try:
        if supervisor is not None:
            supervisor.start()
        uvicorn.run(application, host=settings.host, port=settings.port, log_config=None,
                    access_log=False)
    finally:
        if supervisor is not None:
            supervisor.stop()


@app.command()
def worker(
    data_dir: DataDir = None,
    threads: Annotated[int | None, typer.Option(help="Worker threads.")] = None,
) -> None:
    """Run pipeline workers only: consume the broker's queues on this data directory.

    `kenning serve` starts these itself (--worker-processes); start more by hand to add
    CPU beside a running server. Stops on Ctrl-C or SIGTERM, handing back what it held.
    """
    import gc
    import signal
    import time

    from kenning.container import Kenning
    from kenning.observability.logging import configure_logging

    settings = _settings(data_dir, workers=threads)
    configure_logging(settings.log_level, json_lines=settings.log_json)
    # The handler only records the signal: one that took a lock (Event.set) could land
    # while the main thread holds that same lock, and deadlock the process.
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _: received.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _: received.append(signum))
    kenning_worker = Kenning(settings)
    # What start-up built (modules, stores, registries) lives as long as the process:
    # out of the collector's reach, a full collection only walks what the work
    # allocates (measured: a tenth of a batch settle's CPU went to collections).
    gc.collect()
    gc.freeze()
    try:
        kenning_worker.start_worker()
        while not received:
            time.sleep(0.2)  # a signal cuts the sleep short
    finally:
        kenning_worker.close()


def _walk(targets: list[str]) -> list[str | Path]:
    out: list[str | Path] = []
    for target in targets:
        if target.startswith(("http://", "https://")):
            out.append(target)
            continue
        path = Path(target)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file()
                              and not p.name.startswith(".")))
        elif path.is_file():
            out.append(path)
        else:
            console.print(f"[yellow]skipped[/yellow] {target}: no such file or folder")
    return out


def ingest_items(
    client: Client, items: list[str | Path], *, metadata: str | None = None, parallel: int = 2,
    batch_size: int | None = None,
) -> dict[str, int]:
    """Send items in batches (POST /v1/assets/batch), ``parallel`` batches at a time, with
    a progress bar; counts new, duplicate, rejected.

    ``batch_size`` defaults to ``step_batch_items`` (at most ``max_batch_items``); a batch's
    files together stay within their ``max_upload_bytes`` (see :func:`plan_batches`).
    """
    counts = {"new": 0, "duplicate": 0, "rejected": 0}
    meta = json.loads(metadata) if metadata else None
    settings = client.settings
    # Batches of a step's size: the pipeline starts on the first while the next uploads.
    # By default the first is a quarter of one and goes alone, so the server's workers
    # get to work (and its model gets its first batch) before the rest is uploaded.
    size = batch_size or min(settings.max_batch_items, settings.step_batch_items)
    batches = plan_batches(items, size=size, first=None if batch_size else max(1, size // 4),
                           budget_bytes=settings.max_upload_bytes, metadata=meta)

    def send(batch: list[str | Path]) -> list[tuple[str | Path, dict[str, Any] | ApiError]]:
        try:
            if isinstance(batch[0], Path):
                results = client.ingest_files([Path(i) for i in batch], meta)
            else:
                results = client.ingest_urls([str(i) for i in batch], meta)
        except ApiError as exc:
            if exc.code == "unreachable":
                raise
            return [(item, exc) for item in batch]  # the batch was refused as a whole
        except OSError as exc:
            if len(batch) > 1:  # find the file that cannot be read; send the others
                return [pair for item in batch for pair in send([item])]
            return [(batch[0], ApiError(0, "unreadable", str(exc)))]
        return [(item, r["accepted"] if r.get("accepted") else
                 ApiError(r["error"]["status"], r["error"]["code"], r["error"]["message"]))
                for item, r in zip(batch, results, strict=True)]

    columns = (TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, ThreadPoolExecutor(parallel) as pool:
        task = progress.add_task("ingest", total=len(items))

        def count(results: list[tuple[str | Path, dict[str, Any] | ApiError]]) -> None:
            for item, result in results:
                if isinstance(result, ApiError):
                    counts["rejected"] += 1
                    progress.console.print(f"[red]rejected[/red] {item}: {result.code}")
                else:
                    counts["duplicate" if result.get("duplicate_of") else "new"] += 1
                progress.advance(task)

        if batches:
            count(send(batches[0]))
        for future in as_completed([pool.submit(send, batch) for batch in batches[1:]]):
            count(future.result())
    return counts


@app.command()
def ingest(
    targets: Annotated[list[str], typer.Argument(help="Files, folders (recursive) or URLs.")],
    data_dir: DataDir = None,
    api_url: ApiUrl = None,
    metadata: Annotated[str | None, typer.Option(help="JSON metadata for every item.")] = None,
    parallel: Annotated[int, typer.Option(min=1, help=(
        "Concurrent batch uploads (two keep the server busy: one is written while the "
        "next one uploads)."))] = 2,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Items per batch request (default: KENNING_STEP_BATCH_ITEMS, at most "
        "KENNING_MAX_BATCH_ITEMS).")] = None,
) -> None:
    """Send files, folders and URLs to the server in batches, with a progress bar."""
    if metadata is not None:
        # Checked once here: a bad value would otherwise fail every item (or, for URL
        # items, crash the upload threads with a traceback).
        try:
            parsed = json.loads(metadata)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--metadata")
    client = _client(data_dir, api_url)
    try:
        counts = ingest_items(client, _walk(targets), metadata=metadata, parallel=parallel,
                              batch_size=batch_size)
    except ApiError as exc:
        _fail(exc)
    _print(counts)
    if counts["rejected"] and not (counts["new"] or counts["duplicate"]):
        raise typer.Exit(1)


JsonOut = Annotated[bool, typer.Option("--json", help="Print the JSON answer, not a table.")]
@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    mode: Annotated[str, typer.Option(help="keyword, semantic or hybrid.")] = "hybrid",
    limit: Annotated[int, typer.Option(help="Most hits.")] = 10,
    kind: Annotated[list[str] | None, typer.Option(help="Filter by asset kind.")] = None,
    language: Annotated[list[str] | None, typer.Option(help="Filter by language.")] = None,
    as_json: JsonOut = False,
    data_dir: DataDir = None,
    api_url: ApiUrl = None,
) -> None:
    """Search the corpus (same as POST /v1/search)."""
    body = {"query": query, "mode": mode, "limit": limit,
            "filters": {"kind": kind or None, "language": language or None}}
    try:
        result = _client(data_dir, api_url).post("/v1/search", body)
    except ApiError as exc:
        _fail(exc)
    if as_json:
        _print(result)
    else:
        Console().print(search_table(result))


@app.command()
def segments(
    asset_id: Annotated[str, typer.Argument(help="The asset's id.")],
    kind: Annotated[str | None, typer.Option(
        help="Only this kind: shot, utterance, ocr, chunk, ocr_block...")] = None,
    as_json: JsonOut = False,
    data_dir: DataDir = None,
    api_url: ApiUrl = None,
) -> None:
    """An asset's segments, moments as mm:ss (same as GET /v1/assets/{id}/segments)."""
    params = {"kind": kind} if kind else {}
    try:
        result = _client(data_dir, api_url).get(
            f"/v1/assets/{quote(asset_id, safe='')}/segments", **params)
    except ApiError as exc:
        _fail(exc)
    if as_json:
        _print(result)
    else:
        Console().print(segments_table(result))


@app.command()
def similar(
    target: Annotated[str, typer.Argument(help="A file path or an asset id.")],
    threshold: Annotated[float | None, typer.Option(help="PDQ bits or cosine.")] = None,
    as_json: JsonOut = False,
    data_dir: DataDir = None,
    api_url: ApiUrl = None,
) -> None:
    """Find near-duplicates and similar items (same as POST /v1/similar)."""
    client = _client(data_dir, api_url)
    try:
        path = Path(target)
        if path.is_file():
            result = client.similar_file(path, threshold)
        else:
            result = client.post("/v1/similar", {"asset_id": target, "threshold": threshold})
    except ApiError as exc:
        _fail(exc)
    if as_json:
        _print(result)
    else:
        Console().print(similar_table(result))


@app.command()
def migrate(
    to_database: Annotated[str, typer.Option(
        help="SQLAlchemy URL of the target metadata store, e.g. "
        "postgresql+psycopg://user@host/db (migrated to the current schema first).")],
    to_blobs: Annotated[str | None, typer.Option(
        help="Target blob store, e.g. s3://bucket/prefix (KENNING_S3_* give the endpoint "
        "and keys); without it the blobs stay where they are.")] = None,
    data_dir: DataDir = None,
    batch_rows: Annotated[int, typer.Option(
        min=1, help="Rows per copy transaction (memory and transaction size).")] = 2_000,
) -> None:
    """Move this installation's metadata (and blobs) to other stores, verified by row
    counts, row digests and blob keys. Stop the server first; run again to resume."""
    from kenning.services.migrate import migrate as run_migration
    from kenning.stores.bundle import make_blob_store
    from kenning.stores.metadata import Database

    settings = _settings(data_dir)
    source = Database(settings.resolved_database_url)
    source.upgrade()
    target = Database(to_database)
    target_blobs = (make_blob_store(settings.model_copy(update={"blob_url": to_blobs}))
                    if to_blobs else None)
    report = run_migration(
        source, make_blob_store(settings), target, target_blobs, batch_rows=batch_rows,
        progress=lambda name, n: console.print(f"{name}: {n} copied"))
    _print(report.as_dict())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def status(as_json: JsonOut = False, data_dir: DataDir = None, api_url: ApiUrl = None) -> None:
    """Server readiness and queue depths."""
    client = _client(data_dir, api_url)
    try:
        ready = client.readiness()
        queues = client.get("/v1/admin/queues")
    except ApiError as exc:
        _fail(exc)
    if as_json:
        _print({"ready": ready, "queues": queues})
    else:
        Console().print(status_table(ready, queues))


@dlq.command("list")
def dlq_list(data_dir: DataDir = None, api_url: ApiUrl = None) -> None:
    """Dead letters of your tenant."""
    try:
        _print(_client(data_dir, api_url).get("/v1/admin/dead-letters"))
    except ApiError as exc:
        _fail(exc)


@dlq.command("redrive")
def dlq_redrive(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids (default: all).")]
    = None,
    data_dir: DataDir = None,
    api_url: ApiUrl = None,
) -> None:
    """Put dead-lettered work back on its queue."""
    try:
        _print(_client(data_dir, api_url).post("/v1/admin/dead-letters", {"ids": ids or None}))
    except ApiError as exc:
        _fail(exc)


@db.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Apply database migrations."""
    from kenning.stores.metadata import Database

    settings = _settings(data_dir)
    settings.ensure_dirs()
    Database(settings.resolved_database_url).upgrade()
    console.print("database is at the latest revision")


@apikey.command("create")
def apikey_create(
    tenant: Annotated[str, typer.Option(help="Tenant name (created if missing).")] = "default",
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
    data_dir: DataDir = None,
) -> None:
    """Create an API key (printed once; only its hash is stored)."""
    from kenning.services.tenants import TenantService
    from kenning.stores.metadata import Database

    settings = _settings(data_dir)
    settings.ensure_dirs()
    database = Database(settings.resolved_database_url)
    database.upgrade()
    service = TenantService(database)
    tenant_id = service.tenant_id(tenant) or service.create_tenant(tenant)
    issued = service.create_key(tenant_id, name, actor="cli")
    _print({"tenant": tenant, "tenant_id": tenant_id, "key_id": issued.key_id,
            "api_key": issued.key})


@app.command("settings")
def show_settings() -> None:
    """Every setting with its environment variable, current value and description."""
    current = Settings()
    for name, field in Settings.model_fields.items():
        value = getattr(current, name)
        sys.stdout.write(f"KENNING_{name.upper()}={value}\n    {field.description}\n")


@app.command()
def demo(
    data_dir: DataDir = None,
    articles: Annotated[int, typer.Option(help="News articles to ingest.")] = 300,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve",
                                              help="Keep serving when done.")] = True,
) -> None:
    """Start a server, ingest the real demo corpus, print where to look."""
    from kenning.cli.demo import run_demo

    settings = _settings(data_dir or Path(os.environ.get("KENNING_DATA_DIR", ".kenning")))
    raise typer.Exit(run_demo(settings, articles=articles, keep_serving=serve_after))


if __name__ == "__main__":
    app()
