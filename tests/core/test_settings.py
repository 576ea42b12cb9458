"""Settings: defaults, environment overrides, the YAML file, precedence and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chorus.errors import SettingsError
from chorus.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHORUS_* variable from the outer environment leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("CHORUS_"):
            monkeypatch.delenv(name)


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "chorus.yaml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("CHORUS_CONFIG", str(path))
    return path


def test_defaults_load() -> None:
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.redis.key_prefix == "chorus"
    assert settings.premium.model == "gpt-4o-mini"
    assert settings.premium.api_key is None
    assert not settings.premium.configured
    assert settings.local.backend == "llama_cpp"
    assert settings.local.replicas == 1
    assert settings.serve.port == 8000
    assert "gpt-4o-mini" in settings.pricing.models
    assert settings.ray_address is None
    assert settings.metrics_enabled is True


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORUS_PREMIUM__MODEL", "gpt-4o")
    monkeypatch.setenv("CHORUS_REDIS__URL", "redis://cache.internal:6380/2")
    monkeypatch.setenv("CHORUS_LOCAL__REPLICAS", "4")
    monkeypatch.setenv("CHORUS_METRICS_ENABLED", "false")
    settings = load_settings()
    assert settings.premium.model == "gpt-4o"
    assert settings.redis.url == "redis://cache.internal:6380/2"
    assert settings.local.replicas == 4
    assert settings.metrics_enabled is False
    # Siblings of an overridden setting keep their defaults.
    assert settings.redis.key_prefix == "chorus"
    assert settings.premium.base_url == "https://api.openai.com/v1"


def test_env_api_key_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORUS_PREMIUM__API_KEY", "sk-test-123")
    settings = load_settings()
    assert settings.premium.configured
    assert settings.premium.api_key is not None
    assert settings.premium.api_key.get_secret_value() == "sk-test-123"
    assert "sk-test-123" not in repr(settings)


def test_yaml_file_via_chorus_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(
        tmp_path,
        monkeypatch,
        "redis:\n"
        "  url: redis://yaml-host:6379/1\n"
        "  key_prefix: fleet_a\n"
        "premium:\n"
        "  model: gpt-4.1-mini\n"
        "local:\n"
        "  threads: 8\n"
        "ray_namespace: staging\n",
    )
    settings = load_settings()
    assert settings.redis.url == "redis://yaml-host:6379/1"
    assert settings.redis.key_prefix == "fleet_a"
    assert settings.premium.model == "gpt-4.1-mini"
    assert settings.local.threads == 8
    assert settings.ray_namespace == "staging"
    assert settings.local.replicas == 1  # not in the file: default


def test_empty_yaml_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(tmp_path, monkeypatch, "")
    assert load_settings().redis.url == "redis://127.0.0.1:6379/0"


def test_env_beats_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(
        tmp_path,
        monkeypatch,
        "redis:\n  url: redis://yaml-host:6379/1\n  key_prefix: fleet_a\npremium:\n  model: gpt-4o\n",
    )
    monkeypatch.setenv("CHORUS_REDIS__URL", "redis://env-host:6379/3")
    settings = load_settings()
    assert settings.redis.url == "redis://env-host:6379/3"
    # The env var overrides one key; the rest of the YAML section still applies.
    assert settings.redis.key_prefix == "fleet_a"
    assert settings.premium.model == "gpt-4o"


def test_keyword_arguments_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORUS_PREMIUM__MODEL", "gpt-4o")
    settings = load_settings(premium={"model": "gpt-4.1-mini"})
    assert settings.premium.model == "gpt-4.1-mini"


# --------------------------------------------------------------------------- errors


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_bad_redis_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORUS_REDIS__URL", "http://x")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "'redis.url'" in message
    assert "CHORUS_REDIS__URL" in message
    assert "must start with redis://" in message


def test_zero_replicas_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORUS_LOCAL__REPLICAS", "0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "'local.replicas'" in message
    assert "CHORUS_LOCAL__REPLICAS" in message
    assert "greater than or equal to 1" in message


def test_non_integer_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORUS_SERVE__PORT", "eighty")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "'serve.port'" in str(info.value)
    assert "CHORUS_SERVE__PORT" in str(info.value)
    assert "integer" in str(info.value)


def test_every_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORUS_REDIS__URL", "http://x")
    monkeypatch.setenv("CHORUS_LOCAL__REPLICAS", "0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "'redis.url'" in str(info.value)
    assert "'local.replicas'" in str(info.value)


def test_unknown_key_in_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(tmp_path, monkeypatch, "redis:\n  urll: redis://typo:6379/0\n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert "'redis.urll'" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_top_level_key_in_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(tmp_path, monkeypatch, "reddis:\n  url: redis://typo:6379/0\n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "'reddis'" in str(info.value)
    assert "Extra inputs are not permitted" in str(info.value)


def test_bad_value_in_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _config(tmp_path, monkeypatch, "serve:\n  port: 70000\n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "'serve.port'" in str(info.value)
    assert "less than or equal to 65535" in str(info.value)


def test_yaml_file_that_is_a_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path, monkeypatch, "- redis\n- local\n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(path) in str(info.value)
    assert "must hold a mapping of settings" in str(info.value)


def test_yaml_file_with_bad_syntax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path, monkeypatch, "redis:\n  url: [redis://a\n  key_prefix: b\n")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(path) in str(info.value)
    assert "not valid YAML" in str(info.value)


def test_missing_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere.yaml"
    monkeypatch.setenv("CHORUS_CONFIG", str(missing))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(missing) in str(info.value)
    assert "not found" in str(info.value)
    assert "CHORUS_CONFIG" in str(info.value)


def test_local_tier_url_follows_the_serve_port_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORUS_SERVE__PORT", "8123")
    assert load_settings().local.base_url == "http://127.0.0.1:8123/llm/v1"
    monkeypatch.setenv("CHORUS_LOCAL__BASE_URL", "http://gpu-tier:8000/llm/v1")
    assert load_settings().local.base_url == "http://gpu-tier:8000/llm/v1"


def test_the_editor_budget_ceiling_has_a_default_and_an_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().budget.editor_ceiling_usd == 10.0
    monkeypatch.setenv("CHORUS_BUDGET__EDITOR_CEILING_USD", "250")
    assert load_settings().budget.editor_ceiling_usd == 250.0
    monkeypatch.setenv("CHORUS_BUDGET__EDITOR_CEILING_USD", "-1")
    with pytest.raises(ValueError, match=r"budget\.editor_ceiling_usd"):
        load_settings()
