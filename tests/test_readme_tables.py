"""The README's provider and detection tables are the registries' rendering (deploy/readme_tables.py): a
provider or detection added, removed or changed without regenerating them fails here, with the command."""

from __future__ import annotations

from pathlib import Path

import pytest

from chalicelib.audit.detections.registry import DETECTIONS
from chalicelib.targets.registry import PROVIDERS
from deploy import readme_tables


def test_readme_tables_match_the_registries() -> None:
    current = readme_tables.README.read_text()
    assert readme_tables.render(current) == current, (
        f"README.md's provider/detection tables are out of date; run: {readme_tables.REGENERATE}")


def test_every_registered_provider_and_detection_is_in_its_table() -> None:
    providers, detections = readme_tables.providers_table(), readme_tables.detections_table()
    for name, cls in PROVIDERS.items():
        assert f"| `{name}` |" in providers and cls.summary.webhook in providers
        for field in cls.config_model.model_fields:
            if field not in {"provider", "id", "token", "secret_names", "oidc"}:  # common to all: README "Configuration"
                assert f"`{field}`" in providers, f"{name}.{field} missing from the provider table"
    for _, detection in DETECTIONS.items():
        row = next(line for line in detections.splitlines() if line.startswith(f"| {detection.category.value} |"))
        assert f"`{detection.id.split('.', 1)[1]}`" in row


def test_a_stale_table_is_caught_and_the_fix_is_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    current = readme_tables.README.read_text()
    stale = current.replace(next(line for line in current.splitlines() if line.startswith("| `github` |")) + "\n", "")
    readme = tmp_path / "README.md"
    readme.write_text(stale)
    monkeypatch.setattr(readme_tables, "README", readme)

    assert readme_tables.main(["--check"]) == 1
    assert readme_tables.REGENERATE in capsys.readouterr().err
    assert readme_tables.main([]) == 0
    assert readme.read_text() == current
    assert readme_tables.main(["--check"]) == 0


def test_missing_markers_are_an_error_not_a_silent_pass() -> None:
    with pytest.raises(ValueError, match="providers:begin"):
        readme_tables.render("no tables here\n")
