"""What a member means: slash commands and free-text words, in Chinese and English, mapped to
the intents flows answer. One table, so the Telegram command menu, the console and WeChat's free
text all agree."""

from __future__ import annotations

import re
import unicodedata

# Commands a chat can type; also the Telegram command menu (descriptions live in chat/label).
COMMANDS: dict[str, str] = {
    "start": "start",
    "help": "help",
    "menu": "menu",
    "points": "points",
    "history": "history",
    "tier": "tier",
    "coupons": "coupons",
    "rewards": "rewards",
    "wallet": "wallet",
    "cars": "cars",
    "book": "book",
    "bookings": "bookings",
    "survey": "survey",
    "complaint": "complaint",
    "language": "language",
    "lang": "language",
    "stop": "stop",
    "unbind": "unbind",
    "cancel": "cancel",
    "staff": "staff",
    "member": "member_mode",
}

# Free text, matched after normalisation (case, width, spaces and punctuation ignored). Longer
# phrases win over the words inside them ("取消预约" is not "预约").
KEYWORDS: dict[str, str] = {
    "积分": "points",
    "我的积分": "points",
    "查积分": "points",
    "积分查询": "points",
    "points": "points",
    "mypoints": "points",
    "balance": "points",
    "积分明细": "history",
    "明细": "history",
    "history": "history",
    "等级": "tier",
    "会员": "tier",
    "会员等级": "tier",
    "我的等级": "tier",
    "tier": "tier",
    "level": "tier",
    "membership": "tier",
    "优惠券": "coupons",
    "我的优惠券": "coupons",
    "券": "coupons",
    "coupons": "coupons",
    "coupon": "coupons",
    "兑换": "rewards",
    "积分兑换": "rewards",
    "礼品": "rewards",
    "rewards": "rewards",
    "redeem": "rewards",
    "储值": "wallet",
    "余额": "wallet",
    "次卡": "wallet",
    "wallet": "wallet",
    "cards": "wallet",
    "我的车": "cars",
    "车辆": "cars",
    "爱车": "cars",
    "cars": "cars",
    "mycars": "cars",
    "年检": "cars",
    "保险": "cars",
    "车险": "cars",
    "预约": "book",
    "保养": "book",
    "洗车": "book",
    "预约保养": "book",
    "book": "book",
    "booking": "book",
    "appointment": "book",
    "我的预约": "bookings",
    "取消预约": "bookings",
    "改约": "bookings",
    "mybookings": "bookings",
    "bookings": "bookings",
    "cancelbooking": "bookings",
    "评价": "survey",
    "survey": "survey",
    "投诉": "complaint",
    "建议": "complaint",
    "complaint": "complaint",
    "complain": "complaint",
    "退订": "stop",
    "stop": "stop",
    "unsubscribe": "stop",
    "订阅": "start",
    "language": "language",
    "语言": "language",
    "english": "language",
    "中文": "language",
    "帮助": "help",
    "help": "help",
    "菜单": "menu",
    "menu": "menu",
    "你好": "menu",
    "hi": "menu",
    "hello": "menu",
    "取消": "cancel",
    "cancel": "cancel",
}

# The main menu of a bound chat, and of a chat that still has to bind.
MENU = (
    "points",
    "tier",
    "coupons",
    "rewards",
    "wallet",
    "cars",
    "book",
    "bookings",
    "survey",
    "complaint",
    "language",
    "help",
)
UNBOUND_MENU = ("how_to_bind", "language", "help")
# A staff chat acting as staff; `member_mode` only where the chat speaks for a member too.
STAFF_MENU = ("staff_bookings", "staff_complaints", "member_mode", "help")

_NOISE = re.compile(r"[\s\W_]+", re.UNICODE)
_COMMAND = re.compile(r"[a-z_]{1,32}")


def normalize(text: str) -> str:
    """Lower-case, full-width folded, without spaces or punctuation: "我的 积分！" → "我的积分"."""
    return _NOISE.sub("", unicodedata.normalize("NFKC", text).casefold())


def text_intent(text: str) -> str | None:
    """The intent a free-text message names, or None. Exact phrases only: a sentence that
    merely contains 积分 is not a request (it may be a complaint)."""
    return KEYWORDS.get(normalize(text)) if text else None


def command_intent(command: str) -> str | None:
    """The intent of a slash command, `/Points@shop_bot` and all; None for unknown ones."""
    name = command.lstrip("/").split("@", 1)[0].casefold()
    return COMMANDS.get(name) if _COMMAND.fullmatch(name) else None
