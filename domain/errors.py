"""Typed domain errors. Each carries a message key and parameters, so every channel (chat, CLI,
WeChat) shows the same translated sentence instead of a stack trace."""

from __future__ import annotations

from datetime import date
from typing import Any


class DomainError(Exception):
    """A rule said no. `key` names the message template; `params` fill it."""

    key = "error.generic"

    def __init__(self, message: str, **params: Any) -> None:
        super().__init__(message)
        self.params = params

    def template_context(self) -> dict[str, Any]:
        """What a message template may say about this refusal: its key and the plain values
        among its params (text, numbers, dates), never an object a template could poke at."""
        plain = {
            key: value
            for key, value in (self.params or {}).items()
            if isinstance(value, str | int | float | date) and key != "key"
        }
        return {"key": self.key, **plain}


class NotFound(DomainError):
    key = "error.not_found"


class InvalidInput(DomainError):
    key = "error.invalid_input"


class InsufficientPoints(DomainError):
    key = "error.insufficient_points"


class InsufficientBalance(DomainError):
    key = "error.insufficient_balance"


class CouponUnavailable(DomainError):
    key = "error.coupon_unavailable"


class PunchCardUnavailable(DomainError):
    key = "error.punch_card_unavailable"


class RewardUnavailable(DomainError):
    key = "error.reward_unavailable"


class ConfigError(DomainError):
    """The shop configuration is wrong; `problems` lists (file, key, reason) triples."""

    key = "error.config"

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        lines = "\n".join(f"{f}: {k}: {r}" for f, k, r in problems)
        super().__init__(f"invalid shop configuration:\n{lines}")
        self.problems = problems


class TemplateError(DomainError):
    """A message template cannot be rendered; subclasses say why, `params` say where."""

    key = "error.template"


class TemplateInvalid(TemplateError):
    """The template does not compile; `params`: line, reason."""

    key = "error.template_invalid"


class TemplateUndefinedName(TemplateError):
    """The template uses a name the context does not provide; `params`: name, line."""

    key = "error.template_undefined"


class TemplateUnsafe(TemplateError):
    """The template reached for something the sandbox denies; `params`: reason, line."""

    key = "error.template_unsafe"


class TemplateTooCostly(TemplateError):
    """The template asked for more work or memory than any message needs; `params`: reason."""

    key = "error.template_too_costly"


class MessageTooLong(TemplateError):
    """The rendered text exceeds the channel's limit; `params`: channel, limit, length, unit."""

    key = "error.message_too_long"


class BookingUnavailable(DomainError):
    """A booking cannot be made, changed or cancelled; `params['reason']` says why: past,
    too_soon, too_far, outside_hours, not_on_grid, full, overlap, unknown_service,
    store_closed, not_your_car, too_late, not_active."""

    key = "error.booking_unavailable"

    @property
    def reason(self) -> str:
        return str(self.params.get("reason", ""))


class InviteInvalid(DomainError):
    """A chat cannot be bound with what was offered; `params['reason']` says why: unknown,
    expired, used (invite codes), not_own_contact, phone_shared (shared contacts)."""

    key = "error.invite_invalid"

    @property
    def reason(self) -> str:
        return str(self.params.get("reason", ""))


class TooManyAttempts(DomainError):
    """A chat guessed wrong too often; `params['retry_at']` is when it may try again (UTC)."""

    key = "error.too_many_attempts"
