"""Process roles: the ROLES setting and ``python -m app serve --role`` parsing."""

from __future__ import annotations

import pytest

from app.__main__ import main
from app.settings import Settings, SettingsError, parse_roles


def test_roles_parse_from_commas_and_repeats() -> None:
    assert parse_roles("web") == {"web"}
    assert parse_roles(["web,collector", " Delivery "]) == {"web", "collector", "delivery"}
    with pytest.raises(ValueError, match="unknown role 'worker'; choose from web, collector, delivery"):
        parse_roles(["web", "worker"])
    with pytest.raises(ValueError, match="at least one role"):
        parse_roles(" , ")


def test_every_role_by_default_and_a_bad_roles_setting_is_named() -> None:
    assert Settings.from_env({}).role_set == {"web", "collector", "delivery"}
    assert Settings.from_env({"ROLES": "collector"}).role_set == {"collector"}
    with pytest.raises(SettingsError, match="ROLES: unknown role 'checks'"):
        Settings.from_env({"ROLES": "checks"})


def test_serve_refuses_an_unknown_role(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--role", "collector", "--role", "mailer"]) == 2
    assert "--role: unknown role 'mailer'" in capsys.readouterr().err
