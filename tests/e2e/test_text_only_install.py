"""A text-only install (``pip install 'kenning[text]'``) builds, ingests and searches text.

The child Python refuses to import the image extra (pdqhash, rapidocr, onnxruntime) with
a ``sys.meta_path`` finder, as if it had never been installed, then runs a real Kenning:
API, worker, models, embedded stores. Image processors are not registered (one log line
names the extra) and images are refused with ``415 unsupported_media_type``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import media

pytestmark = pytest.mark.slow

CHILD = r'''
import importlib.abc, json, logging, sys
from pathlib import Path

BLOCKED = {"pdqhash", "rapidocr", "onnxruntime"}


class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


sys.meta_path.insert(0, Refuse())
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")

from fastapi.testclient import TestClient

from kenning.api.app import create_app
from kenning.container import Kenning
from kenning.settings import Settings

work = Path(sys.argv[1])
given = json.loads((work / "inputs.json").read_text())
kenning = Kenning(Settings(data_dir=work / "data", workers=1, log_json=False,
                           reconcile_interval_s=0.5))
out = {"processors": kenning.registry.names()}
with TestClient(create_app(kenning)) as client:
    key = (work / "data" / "bootstrap_api_key").read_text().strip()
    auth = {"Authorization": f"Bearer {key}"}
    out["texts"] = [client.post("/v1/assets", headers=auth, json={"text": text}).json()
                    for text in given["texts"]]
    kenning.join(240)
    out["status"] = [client.get(f"/v1/assets/{t['asset_id']}", headers=auth).json()["status"]
                     for t in out["texts"]]
    for mode, query in (("keyword", given["keyword"]), ("semantic", given["semantic"])):
        found = client.post("/v1/search", headers=auth, json={"query": query, "mode": mode})
        out[mode] = [hit["asset_id"] for hit in found.json()["hits"]]
    image = Path(given["image"]).read_bytes()
    for path in ("/v1/assets", "/v1/similar"):
        refused = client.post(path, headers=auth, files={"file": ("photo.png", image)})
        out[path] = [refused.status_code, refused.json()]
out["loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def text_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    work = tmp_path_factory.mktemp("text-only")
    fire, kashmir = (a.text for a in media.news(2))
    (work / "inputs.json").write_text(json.dumps({
        "texts": [fire, kashmir], "keyword": "militants Kashmir",
        "semantic": "Ein Buschfeuer bedroht Häuser", "image": str(media.image_path("coffee.png")),
    }))
    done = subprocess.run([sys.executable, "-c", CHILD, str(work)], capture_output=True,
                          text=True, timeout=280, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_text_is_ingested_and_found(text_only: tuple[dict[str, Any], str]) -> None:
    out, _ = text_only
    fire, kashmir = (t["asset_id"] for t in out["texts"])
    assert out["status"] == ["ready", "ready"]
    assert out["keyword"] == [kashmir]
    assert out["semantic"][0] == fire
    assert out["loaded"] == []  # nothing of the image extra was ever imported


def test_image_processors_are_not_registered_and_one_line_says_why(
    text_only: tuple[dict[str, Any], str],
) -> None:
    out, stderr = text_only
    assert out["processors"] and not any(p.startswith("image.") for p in out["processors"])
    lines = [line for line in stderr.splitlines() if "image processors not registered" in line]
    assert lines == [
        "kenning.processors.builtin: image processors not registered, images will be "
        "refused: pdqhash is not installed: pip install 'kenning[image]'"
    ]


@pytest.mark.parametrize("path", ["/v1/assets", "/v1/similar"])
def test_an_image_is_refused_with_415_naming_the_extra(
    text_only: tuple[dict[str, Any], str], path: str
) -> None:
    status, body = text_only[0][path]
    assert status == 415
    assert body["error"]["code"] == "unsupported_media_type"
    assert "pip install 'kenning[image]'" in body["error"]["message"]
