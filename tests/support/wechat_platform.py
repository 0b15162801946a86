"""WeChat's servers as the tests play them: pushes to our webhook signed as WeChat signs them
(SHA-1 of the sorted token, timestamp and nonce) and, in safe mode, encrypted with wechatpy's
`WeChatCrypto` and a `msg_signature`; passive replies read back as a member would see them."""

from __future__ import annotations

import base64
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count

import httpx
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import WeChatSigner

from bot.channels import wechat

TOKEN = "memberbotToken42"
APP_ID = "wx0123456789abcdef"
APP_SECRET = "0123456789abcdef0123456789abcdef"
AES_KEY = base64.b64encode(bytes(range(32))).decode().rstrip("=")
ACCOUNT = "gh_0123456789ab"


def signature(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


def text_xml(openid: str, content: str, msg_id: int, created: int) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{created}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


def event_xml(openid: str, event: str, created: int, key: str | None = None) -> str:
    key_xml = f"<EventKey><![CDATA[{key}]]></EventKey>" if key is not None else ""
    return (
        f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[{event}]]></Event>{key_xml}</xml>"
    )


@dataclass
class WeChatServer:
    """What WeChat's servers do to our webhook: signed (and in safe mode encrypted) pushes."""

    client: httpx.AsyncClient
    safe: bool = False
    path: str = wechat.DEFAULT_PATH
    msg_ids: Iterator[int] = field(default_factory=lambda: count(7_000_000_001))
    crypto: WeChatCrypto = field(default_factory=lambda: WeChatCrypto(TOKEN, AES_KEY, APP_ID))

    def query(self, timestamp: int | None = None, nonce: str = "n0nce42") -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        return {"signature": signature(TOKEN, stamp, nonce), "timestamp": stamp, "nonce": nonce}

    async def verify(self, echo: str, **query: str) -> httpx.Response:
        return await self.client.get(self.path, params={**self.query(), "echostr": echo, **query})

    async def push(
        self, xml: str, *, query: dict[str, str] | None = None, raw: bool = False
    ) -> httpx.Response:
        """POST one message; in safe mode encrypted as WeChat does unless `raw`."""
        params, body = self.sealed(xml, query=query, raw=raw)
        return await self.client.post(
            self.path, params=params, content=body, headers={"Content-Type": "text/xml"}
        )

    def sealed(
        self, xml: str, *, query: dict[str, str] | None = None, raw: bool = False
    ) -> tuple[dict[str, str], bytes]:
        """The query and body WeChat would POST for `xml` (encrypted in safe mode unless
        `raw`); apart from `push` so a benchmark can time the HTTP exchange alone."""
        params = dict(query or self.query())
        body = xml
        if self.safe and not raw:
            sealed = ET.fromstring(
                self.crypto.encrypt_message(xml, params["nonce"], params["timestamp"])
            )
            params.update(encrypt_type="aes", msg_signature=sealed.findtext("MsgSignature") or "")
            body = (
                f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName>"
                f"<Encrypt><![CDATA[{sealed.findtext('Encrypt')}]]></Encrypt></xml>"
            )
        return params, body.encode()

    def read(self, response: httpx.Response) -> str:
        """The text a member reads in a passive reply; "" for `success`."""
        assert response.status_code == 200, response.status_code
        if response.text == wechat.SUCCESS:
            return ""
        reply = self.opened(response.text)
        assert reply.findtext("MsgType") == "text"
        assert reply.findtext("ToUserName") and reply.findtext("FromUserName") == ACCOUNT
        return reply.findtext("Content") or ""

    def opened(self, xml: str) -> ET.Element:
        """A passive reply's XML, decrypted in safe mode (wechatpy checks its msg_signature
        and AppID and raises when either is wrong)."""
        if self.safe:
            sealed = ET.fromstring(xml)
            xml = self.crypto.decrypt_message(
                xml,
                sealed.findtext("MsgSignature"),
                sealed.findtext("TimeStamp"),
                sealed.findtext("Nonce"),
            )
        return ET.fromstring(xml)

    async def say(self, openid: str, text: str, msg_id: int | None = None) -> str:
        msg_id = next(self.msg_ids) if msg_id is None else msg_id
        return self.read(await self.push(text_xml(openid, text, msg_id, int(time.time()))))

    async def event(
        self, openid: str, event: str, key: str | None = None, *, later: int = 0
    ) -> str:
        """An event `later` seconds from now (one user's events within a second are one)."""
        created = int(time.time()) + later
        return self.read(await self.push(event_xml(openid, event, created, key)))
