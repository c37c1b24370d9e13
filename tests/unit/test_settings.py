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
