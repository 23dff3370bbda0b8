"""Settings: nothing is needed in development, everything explicit is needed in production,
and every invalid value is named."""

from __future__ import annotations

import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from veche.settings import DEFAULT_RATE_LIMITS, Settings, _dev_secret_key

STRONG_KEY = "k" * 48
PRODUCTION = {
    "env": "production",
    "secret_key": STRONG_KEY,
    "database_url": "postgresql+asyncpg://veche@db.internal/veche",
    "redis_url": "redis://cache.internal:6379/0",
    "public_url": "https://veche.example.com",
}


@pytest.fixture(autouse=True)
def no_veche_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts from an environment without settings and a directory without `.env`."""
    for name in list(os.environ):
        if name.startswith("VECHE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def make(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def problems_of(**values: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        make(**values)
    return str(caught.value)


# -- development ------------------------------------------------------------------------


def test_development_needs_nothing(tmp_path: Path) -> None:
    settings = make(data_dir=tmp_path)

    assert settings.env == "dev"
    assert not settings.is_production
    assert settings.secret_key is None
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'veche.db'}"
    assert settings.rate_limits == DEFAULT_RATE_LIMITS
    assert settings.apps is None


def test_development_signing_key_is_made_once_with_owner_only_permissions(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var" / "nested"
    key_file = data_dir / "secret_key"

    first = make(data_dir=data_dir).signing_keys

    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) == 1
    assert len(first[0]) >= 32
    assert key_file.read_text(encoding="utf-8") == first[0]

    second = make(data_dir=data_dir).signing_keys
    assert second == first


def test_processes_starting_together_share_one_development_key(tmp_path: Path) -> None:
    # Threads stand in for worker processes starting at once on a fresh data directory:
    # each must read the same whole key, never an empty or half-written file. They call
    # the key maker itself because on Python 3.11 `cached_property` serializes threads.
    starters = 8
    for attempt in range(20):
        data_dir = tmp_path / f"attempt-{attempt}"
        data_dir.mkdir()
        barrier = threading.Barrier(starters)

        def start(_: int, directory: Path = data_dir, gate: threading.Barrier = barrier) -> str:
            gate.wait()
            return _dev_secret_key(directory)

        with ThreadPoolExecutor(max_workers=starters) as pool:
            keys = set(pool.map(start, range(starters)))

        assert len(keys) == 1
        assert len(keys.pop()) >= 32
        assert [path.name for path in data_dir.iterdir()] == ["secret_key"]


def test_an_unusable_development_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("\n", encoding="utf-8")

    with pytest.raises(ValueError, match="holds no usable key; delete it"):
        _ = make(data_dir=tmp_path).signing_keys


def test_development_keys_differ_between_data_dirs(tmp_path: Path) -> None:
    one = make(data_dir=tmp_path / "one").signing_keys
    other = make(data_dir=tmp_path / "other").signing_keys
    assert one != other


def test_explicit_secret_key_comes_first_and_writes_no_file(tmp_path: Path) -> None:
    old = "o" * 40
    settings = make(data_dir=tmp_path, secret_key=STRONG_KEY, previous_secret_keys=old)

    assert settings.signing_keys == [STRONG_KEY, old]
    assert not (tmp_path / "secret_key").exists()


# -- environment variables --------------------------------------------------------------


def test_values_are_read_from_veche_environment_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VECHE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VECHE_PORT", "9001")
    monkeypatch.setenv("VECHE_ROLE", "worker")
    monkeypatch.setenv("VECHE_DATABASE_URL", "sqlite+aiosqlite:///elsewhere.db")
    monkeypatch.setenv("VECHE_AUTH__ISSUER", "veche-test")
    monkeypatch.setenv("VECHE_AUTH__ACCESS_TOKEN_TTL_SECONDS", "60")
    monkeypatch.setenv("PORT", "1")  # without the prefix: not ours

    settings = make()

    assert settings.data_dir == tmp_path
    assert settings.port == 9001
    assert settings.role == "worker"
    assert settings.resolved_database_url == "sqlite+aiosqlite:///elsewhere.db"
    assert settings.auth.issuer == "veche-test"
    assert settings.auth.access_token_ttl_seconds == 60


def test_env_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("VECHE_PORT=9002\nVECHE_APPS=blog\n", encoding="utf-8")

    settings = Settings(_env_file=env_file)

    assert settings.port == 9002
    assert settings.apps == ["blog"]


def test_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECHE_APPS", "a, b")
    monkeypatch.setenv("VECHE_TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1 ,")
    monkeypatch.setenv("VECHE_CORS_ORIGINS", "https://a.example,https://b.example")

    settings = make()

    assert settings.apps == ["a", "b"]
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.168.1.1"]
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


def test_rate_limits_from_json_merge_with_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECHE_RATE_LIMITS", '{"auth": "5/minute", "uploads": "10/hour"}')

    limits = make().rate_limits

    assert limits["auth"] == "5/minute"
    assert limits["uploads"] == "10/hour"
    for name in DEFAULT_RATE_LIMITS.keys() - {"auth"}:
        assert limits[name] == DEFAULT_RATE_LIMITS[name]


def test_invalid_rate_limit_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECHE_RATE_LIMITS", '{"auth": "plenty"}')

    with pytest.raises(ValidationError) as caught:
        make()

    message = str(caught.value)
    assert "rate limit 'auth'" in message
    assert "'plenty'" in message


def test_invalid_trusted_proxy_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECHE_TRUSTED_PROXIES", "10.0.0.1, proxy.internal")

    with pytest.raises(ValidationError) as caught:
        make()

    assert "'proxy.internal' is not an IP address or network" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VECHE_ENV", "staging"),
        ("VECHE_PORT", "70000"),
        ("VECHE_AUTH__ARGON2_MEMORY_KIB", "1024"),
        ("VECHE_LOG_LEVEL", "verbose"),
        ("VECHE_SHUTDOWN_GRACE_SECONDS", "0"),
        ("VECHE_SHUTDOWN_GRACE_SECONDS", "61"),
        ("VECHE_SHUTDOWN_GRACE_SECONDS", "soon"),
    ],
)
def test_out_of_range_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        make()


# -- production -------------------------------------------------------------------------


def test_production_with_nothing_set_names_every_missing_item_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        make(env="production")

    assert caught.value.error_count() == 1
    message = str(caught.value)
    for variable in (
        "VECHE_SECRET_KEY",
        "VECHE_DATABASE_URL",
        "VECHE_REDIS_URL",
        "VECHE_PUBLIC_URL",
    ):
        assert f"{variable} is missing" in message


def test_production_from_the_environment_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECHE_ENV", "production")
    monkeypatch.setenv("VECHE_SECRET_KEY", STRONG_KEY)

    message = problems_of()

    assert "VECHE_SECRET_KEY" not in message
    assert "VECHE_DATABASE_URL is missing" in message


def test_production_names_a_short_secret_key() -> None:
    message = problems_of(**{**PRODUCTION, "secret_key": "short"})

    assert "VECHE_SECRET_KEY is shorter than 32 characters" in message
    assert "is missing" not in message


def test_production_names_a_short_previous_key() -> None:
    message = problems_of(**PRODUCTION, previous_secret_keys=[STRONG_KEY, "old"])

    assert "VECHE_PREVIOUS_SECRET_KEYS[1] is too short" in message
    assert "VECHE_PREVIOUS_SECRET_KEYS[0]" not in message


def test_production_refuses_sqlite() -> None:
    message = problems_of(**{**PRODUCTION, "database_url": "sqlite+aiosqlite:///var/veche.db"})

    assert "VECHE_DATABASE_URL points at SQLite" in message


def test_production_refuses_query_echo() -> None:
    message = problems_of(**PRODUCTION, database_echo=True)

    assert "VECHE_DATABASE_ECHO must be off" in message


def test_complete_production_settings_are_accepted(tmp_path: Path) -> None:
    settings = make(**PRODUCTION, data_dir=tmp_path)

    assert settings.is_production
    assert settings.production_problems() == []
    assert settings.signing_keys == [STRONG_KEY]
    assert settings.resolved_database_url == PRODUCTION["database_url"]
    assert not (tmp_path / "secret_key").exists()


def test_secret_key_is_not_shown_in_repr() -> None:
    settings = make(**PRODUCTION)

    assert STRONG_KEY not in repr(settings)
    assert STRONG_KEY not in str(settings.model_dump())
