"""``provider.mock`` options in a manifest are checked by type at ``validate`` (pydantic, like
the manifest), not found wrong at run time; the same gate serves ``/_mock/config``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from batchfuse.mock import MockConfig
from batchfuse.mock.config import apply_changes, make_config
from tests.conftest import cli, manifest


def write(tmp_path: Path, options: dict) -> Path:
    data = manifest("mock", [{"id": "a", "prompt": "a kite"}], output={"dir": "out", "filename": "{item}.png"})
    data["provider"] = {"kind": "gemini", "base_url": "mock", "model": "gemini-3-pro-image-preview",
                        "mock": options}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"rate_503": "often"}, "rate_503: Input should be a valid number, got 'often'"),
        ({"rate_503": 2}, "rate_503: Input should be less than or equal to 1, got 2"),
        ({"latency_ms": "150"}, "latency_ms: Input should be a valid number, got '150'"),
        ({"thought_images": "yes"}, "thought_images: Input should be a valid boolean, got 'yes'"),
        ({"images_per_reply": 1.5}, "images_per_reply: Input should be a valid integer, got 1.5"),
        ({"image_mode": "fancy"}, "image_mode: Input should be 'collage', 'solid' or 'noise', got 'fancy'"),
        ({"latencyms": 1}, "unknown mock config field 'latencyms'"),
    ],
)
def test_wrong_mock_option_fails_validate_with_one_line(tmp_path: Path, monkeypatch, options, said) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, options)
    for command in ("validate", "run"):
        result = cli(command, path.name)
        assert result.exit_code == 2, (command, result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "provider.mock" in result.stderr and said in result.stderr, result.stderr
    assert not (tmp_path / "batchfuse.db").exists()


def test_good_mock_options_validate_and_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, {"latency_ms": 0, "jitter_ms": 0, "image_scale": 0.05, "thought_images": False})
    assert cli("validate", path.name).exit_code == 0
    assert cli("run", path.name).exit_code == 0
    assert (tmp_path / "out" / "a.png").exists()


def test_config_checks_later_assignments_and_admin_changes() -> None:
    config = make_config({"rate_503": 0.5})
    with pytest.raises(ValueError, match="rate_500"):
        apply_changes(config, {"rate_500": "x", "rate_503": 0.1})
    assert (config.rate_503, config.rate_500) == (0.5, 0.0)  # nothing applied when one is wrong
    assert apply_changes(config, {"rate_503": 0.1, "outage_s": 0}) == ["outage_until", "rate_503"]
    with pytest.raises(ValueError):
        config.image_scale = 0  # a live config cannot be set to nonsense either
    assert MockConfig().thought_images is True
