"""The chat: a channel-neutral conversation core (flows) and thin channel adapters (Telegram,
WeChat, console). No business rule lives here; every answer comes from `domain`."""
