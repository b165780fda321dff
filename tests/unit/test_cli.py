"""The shared CLI commands, run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hosepipe.cli import build_app, mask_url_password

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_config_check_prints_effective_config_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOSEPIPE_DATABASE_URL", "postgresql+psycopg://u:topsecret@h:5432/db")
    monkeypatch.setenv("INGEST_KEY", "k" * 32)
    pipeline = (
        (REPO / "hosepipe.yaml")
        .read_text()
        .replace(
            "  auth: false          #",
            "  auth: true\n  api_keys: [{key: '${INGEST_KEY}', name: shop}]\n  #",
        )
    )
    path = tmp_path / "p.yaml"
    path.write_text(pipeline)
    result = runner.invoke(build_app(), ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "dedupe_window" in result.stdout
    assert "topsecret" not in result.stdout
    assert "k" * 32 not in result.stdout
    assert "key: '***'" in result.stdout


def test_config_check_rejects_broken_config_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text((REPO / "hosepipe.yaml").read_text().replace("max_open_partitions", "max_open"))
    result = runner.invoke(build_app(), ["config", "check", str(path)])
    assert result.exit_code == 2
    assert "sink.max_open: unknown key" in result.output


def test_bad_environment_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSEPIPE_INGEST_PORT", "eighty")
    result = runner.invoke(build_app(), ["config", "check", str(REPO / "hosepipe.yaml")])
    assert result.exit_code == 2
    assert "HOSEPIPE_INGEST_PORT" in result.output


def test_mask_url_password() -> None:
    assert mask_url_password("postgresql://u:p%40ss@h:1/db") == "postgresql://u:***@h:1/db"
    assert mask_url_password("postgresql://h/db") == "postgresql://h/db"
