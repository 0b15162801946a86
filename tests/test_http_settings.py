"""The settings of the one HTTP server of `memberbot serve`, and the old names that still
work: the Telegram webhook's listen address and port, and the health port."""

from __future__ import annotations

from typing import Any

import pytest

from memberbot.settings import Settings


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_http_settings_and_their_old_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_HOST", "HTTP_PORT", "HEALTH_PORT", "TELEGRAM_WEBHOOK_PORT"):
        monkeypatch.delenv(f"MEMBERBOT_{name}", raising=False)
    assert (_settings().http_host, _settings().http_port) == ("127.0.0.1", 8080)
    assert _settings(health_port=9001).http_port == 9001
    assert _settings(telegram_webhook_port=9002, health_port=9001).http_port == 9002
    assert _settings(http_port=9003, telegram_webhook_port=9002).http_port == 9003
    assert _settings(telegram_webhook_listen="0.0.0.0").http_host == "0.0.0.0"
    assert _settings(http_host="::1", telegram_webhook_listen="0.0.0.0").http_host == "::1"
    monkeypatch.setenv("MEMBERBOT_TELEGRAM_WEBHOOK_PORT", "9443")
    monkeypatch.setenv("MEMBERBOT_TELEGRAM_WEBHOOK_LISTEN", "0.0.0.0")
    assert (_settings().http_host, _settings().http_port) == ("0.0.0.0", 9443)
    monkeypatch.setenv("MEMBERBOT_HTTP_PORT", "9444")
    assert _settings().http_port == 9444
