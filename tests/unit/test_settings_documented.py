"""Every setting is documented, and ``KENNING_<FIELD>`` reaches it with the right type."""

from __future__ import annotations

from pathlib import Path

import pytest

from kenning.settings import Settings

FIELDS = sorted(Settings.model_fields)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No KENNING_* variable from the caller and no .env file from the working directory."""
    monkeypatch.chdir(tmp_path)
    for name in FIELDS:
        monkeypatch.delenv(f"KENNING_{name.upper()}", raising=False)


@pytest.mark.parametrize("name", FIELDS)
def test_every_setting_has_a_real_description(name: str) -> None:
    description = Settings.model_fields[name].description
    assert description is not None and len(description.strip()) >= 15, (
        f"Settings.{name} needs a description a reader can act on"
    )
    assert not description.startswith(name), f"Settings.{name}: say what it does"


def test_descriptions_are_distinct() -> None:
    descriptions = [Settings.model_fields[name].description for name in FIELDS]
    assert len(set(descriptions)) == len(descriptions)


def test_int_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNING_WORKERS", "7")
    monkeypatch.setenv("KENNING_MAX_UPLOAD_BYTES", "1024")
    settings = Settings()
    assert settings.workers == 7 and isinstance(settings.workers, int)
    assert settings.max_upload_bytes == 1024


@pytest.mark.parametrize(("raw", "value"), [("false", False), ("0", False), ("true", True),
                                            ("1", True)])
def test_bool_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str,
                                   value: bool) -> None:
    monkeypatch.setenv("KENNING_LOG_JSON", raw)
    monkeypatch.setenv("KENNING_ALLOW_PRIVATE_URLS", raw)
    settings = Settings()
    assert settings.log_json is value
    assert settings.allow_private_urls is value


def test_path_from_the_environment_moves_everything_derived(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KENNING_DATA_DIR", str(tmp_path / "srv"))
    settings = Settings()
    assert settings.data_dir == tmp_path / "srv" and isinstance(settings.data_dir, Path)
    assert settings.bootstrap_key_path == tmp_path / "srv" / "bootstrap_api_key"
    assert settings.queue_path == tmp_path / "srv" / "queue.db"
    database = (tmp_path / "srv" / "kenning.db").resolve()
    assert settings.resolved_database_url == f"sqlite:///{database}"


def test_float_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNING_STAGE_TIME_LIMIT_S", "12.5")
    monkeypatch.setenv("KENNING_TEXT_SIMILARITY_THRESHOLD", "0.5")
    settings = Settings()
    assert settings.stage_time_limit_s == 12.5
    assert settings.text_similarity_threshold == 0.5


def test_optional_string_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().api_key is None
    monkeypatch.setenv("KENNING_API_KEY", "kn_from_env")
    assert Settings().api_key == "kn_from_env"


def test_a_dot_env_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KENNING_PORT=9123\nKENNING_OCR_BACKEND=tesseract\n")
    settings = Settings()
    assert (settings.port, settings.ocr_backend) == (9123, "tesseract")


def test_a_bad_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KENNING_WORKERS", "many")
    with pytest.raises(ValueError, match="workers"):
        Settings()


def test_defaults_run_on_a_laptop() -> None:
    settings = Settings()
    assert settings.data_dir == Path(".kenning")
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.api_url == f"http://{settings.host}:{settings.port}"
