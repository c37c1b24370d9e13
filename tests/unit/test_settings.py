"""Settings read from the environment refuse values they cannot honour, naming the variable."""

from __future__ import annotations

from app.settings import Settings, SettingsError


def test_bad_log_settings_are_refused_naming_the_variable() -> None:
    for env in ({"LOG_REQUESTS": "some"}, {"LOG_SLOW_REQUEST_MS": "-1"}):
        try:
            Settings.from_env(env)
        except SettingsError as exc:
            assert next(iter(env)) in str(exc)
        else:
            raise AssertionError(f"{env} was accepted")


def test_the_credential_cache_ttl_is_read_and_may_not_be_negative() -> None:
    assert Settings.from_env({}).auth_cache_ttl == 30.0
    assert Settings.from_env({"AUTH_CACHE_TTL": "0"}).auth_cache_ttl == 0.0  # off
    try:
        Settings.from_env({"AUTH_CACHE_TTL": "-1"})
    except SettingsError as exc:
        assert "AUTH_CACHE_TTL" in str(exc)
    else:
        raise AssertionError("a negative AUTH_CACHE_TTL was accepted")
