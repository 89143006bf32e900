"""``kenning search`` and ``kenning segments`` on a real video against a real server: the
moment a word is said shows as mm:ss in the tables, as seconds in ``--json``.

Megamind.avi (opencv-doc: 11 s, four shots, a line of speech at the end) goes through
the whole pipeline (real Whisper tiny.en, real shot detection, real OCR).
"""

from __future__ import annotations

import json

import pytest

from kenning.cli.client import Client
from kenning.cli.demo import SPOKEN_WORD, moment_lines, video_pair_lines
from kenning.settings import Settings
from tests.fixtures import media
from tests.unit.cli.conftest import LiveServer
from tests.unit.cli.test_cli import asset_ids, flat, kenning, remote

pytest.importorskip("av")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def megamind(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("videos") / "Megamind.avi"
    path.write_bytes(media.video_bytes("Megamind.avi"))
    result = kenning("ingest", str(path), *remote(live_server))
    assert result.exit_code == 0, result.output
    live_server.wait()
    (asset_id,) = asset_ids(live_server).values()
    return asset_id


def test_search_prints_where_in_the_video_a_word_is_said(
    live_server: LiveServer, megamind: str
) -> None:
    table = kenning("search", "petty", "--mode", "keyword", *remote(live_server))
    assert table.exit_code == 0, table.output
    # "Well, that seems kind of petty, don't you think?" is said from 9.6 s to 11.2 s.
    assert megamind in table.stdout and "utterance 00:09-00:11" in table.stdout
    as_json = kenning("search", "petty", "--mode", "keyword", "--json", *remote(live_server))
    (hit,) = json.loads(as_json.stdout)["hits"]
    assert hit["segment_kind"] == "utterance" and 9.0 < hit["start_s"] < 10.0
    assert isinstance(hit["end_s"], float)


def test_segments_lists_shots_and_utterances_as_mm_ss(
    live_server: LiveServer, megamind: str
) -> None:
    shots = kenning("segments", megamind, "--kind", "shot", *remote(live_server))
    assert shots.exit_code == 0, shots.output
    rows = [line for line in shots.stdout.splitlines() if "av.shots" in line]
    assert len(rows) == 4 and "00:00-00:" in rows[0]
    assert "utterance" not in shots.stdout
    every = kenning("segments", megamind, *remote(live_server))
    assert "kind of petty" in flat(every.stdout) and "00:09-00:11" in every.stdout
    as_json = kenning("segments", megamind, "--kind", "utterance", "--json",
                      *remote(live_server))
    assert as_json.exit_code == 0, as_json.output
    utterances = json.loads(as_json.stdout)
    assert utterances and all(isinstance(u["start_s"], float) for u in utterances)
    assert {u["kind"] for u in utterances} == {"utterance"}


def test_segments_of_an_unknown_asset_exit_2(live_server: LiveServer, megamind: str) -> None:
    for asset_id in ("0" * 32, "../admin/queues"):
        result = kenning("segments", asset_id, *remote(live_server))
        assert result.exit_code == 2
        assert "not_found" in flat(result.output)


def test_segments_of_another_tenants_asset_is_not_found(
    live_server: LiveServer, megamind: str
) -> None:
    created = kenning("apikey", "create", "--tenant", "moments-other", "--data-dir",
                      str(live_server.data_dir))
    key = json.loads(created.stdout)["api_key"]
    result = kenning("segments", megamind, *remote(live_server), env={"KENNING_API_KEY": key})
    assert result.exit_code == 2 and "not_found" in flat(result.output)


def test_the_demo_prints_the_moment_a_word_is_said(
    live_server: LiveServer, megamind: str
) -> None:
    client = Client(Settings(data_dir=live_server.data_dir, api_url=live_server.url))
    title, line = moment_lines(client, {megamind: "Megamind.avi"})
    assert f"'{SPOKEN_WORD}'" in title and "utterance" in title
    assert line.startswith(f"  {megamind} (Megamind.avi)  00:09-00:11  \"")
    assert "petty" in line
    # No pair for a lone video: nothing printed (and nothing for an unknown name).
    assert video_pair_lines(client, {"carphone_pristine.mp4": megamind}) == []
    assert video_pair_lines(client, {}) == []
