"""``kenning recs``: the learned ranker's versions, through the API like every command
(``POST`` and ``GET /v1/recommendations/models``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from kenning.cli.client import ApiError, Client
from kenning.settings import Settings

recs = typer.Typer(help="Recommendations: train and list ranker versions.",
                   no_args_is_help=True)
console = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="Overrides KENNING_DATA_DIR.", show_default=False)]
ApiUrl = Annotated[str | None, typer.Option("--api-url", help="Overrides KENNING_API_URL.")]
FINAL = ("serving", "rejected", "retired")


def _client(data_dir: Path | None, api_url: str | None) -> Client:
    values: dict[str, Any] = {}
    if data_dir is not None:
        values["data_dir"] = data_dir
    if api_url is not None:
        values["api_url"] = api_url
    return Client(Settings(**values))


def _print(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _fail(exc: ApiError) -> typer.Exit:
    console.print(f"[red]error[/red] {exc.code}: {exc.message}")
    return typer.Exit(2)


@recs.command("train")
def train(
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the version "
                                       "is promoted or rejected, then print it.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 1800.0,
    data_dir: DataDir = None, api_url: ApiUrl = None,
) -> None:
    """Queue a training run of your tenant's ranker; print the new version."""
    client = _client(data_dir, api_url)
    try:
        model = client.post("/v1/recommendations/models", {})
        deadline = time.monotonic() + timeout
        while wait and model["state"] not in FINAL:
            if time.monotonic() > deadline:
                console.print(f"[yellow]still {model['state']}[/yellow] after {timeout:.0f} s")
                _print(model)
                raise typer.Exit(1)
            time.sleep(1.0)
            model = client.get(f"/v1/recommendations/models/{model['id']}")
    except ApiError as exc:
        raise _fail(exc) from None
    _print(model)
    if wait and model["state"] == "rejected":
        raise typer.Exit(1)


@recs.command("models")
def models(
    limit: Annotated[int, typer.Option(help="Most versions listed (1-100).")] = 20,
    state: Annotated[str | None, typer.Option(help="Only versions in this state: training, "
                                              "candidate, serving, rejected, retired.")] = None,
    data_dir: DataDir = None, api_url: ApiUrl = None,
) -> None:
    """Your tenant's ranker versions, newest first, with metrics and gate decisions."""
    params: dict[str, Any] = {"limit": limit}
    if state is not None:
        params["state"] = state
    try:
        _print(_client(data_dir, api_url).get("/v1/recommendations/models", **params))
    except ApiError as exc:
        raise _fail(exc) from None
