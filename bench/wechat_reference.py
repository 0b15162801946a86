"""The reference bench_wechat compares `memberbot serve` with: the least a WeChat webhook can do.

A bare Starlette app under uvicorn, configured as `memberbot.app.http_server` configures it
(same event loop, same HTTP implementation, access log off, `serve`'s GC tuning), in a process
of its own. For each POST it checks the signature and the timestamp, in safe mode decrypts the
message (wechatpy checks its msg_signature), reads who wrote it (stdlib XML, no hardening, no
wechatpy message classes), and answers one fixed passive text reply to that member, encrypted
in safe mode. No database, no conversation, no dedupe.

What it measures is this machine's HTTP and WeChat-protocol floor with the same client: our
webhook's requests/s divided by its requests/s compares machines better than either figure.

    python -m bench.wechat_reference --port 8091 [--aes]

Stops on SIGTERM or Ctrl-C (uvicorn's own handlers).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import time
import xml.etree.ElementTree as ET

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from wechatpy.crypto import WeChatCrypto
from wechatpy.replies import TextReply

from bot.channels import wechat
from memberbot.app import HEALTH_PATH, tune_gc
from tests.support.wechat_platform import AES_KEY, APP_ID, TOKEN, signature

FIXED_TEXT = "💰 您当前有 1,234 积分。\n可以用积分兑换洗车券、保养抵扣券等礼品。"
MAX_CLOCK_SKEW_SECONDS = 300


def build_app(*, aes: bool) -> Starlette:
    crypto = WeChatCrypto(TOKEN, AES_KEY, APP_ID) if aes else None

    async def receive(request: Request) -> Response:
        query = request.query_params
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
            return Response(status_code=403)
        if not hmac.compare_digest(signature(TOKEN, timestamp, nonce), query.get("signature", "")):
            return Response(status_code=403)
        xml = (await request.body()).decode("utf-8")
        try:
            if crypto is not None:
                xml = crypto.decrypt_message(xml, query["msg_signature"], timestamp, nonce)
            message = ET.fromstring(xml)
        except Exception:  # a wrong msg_signature, a body that is not XML
            return Response(status_code=400)
        reply = TextReply(
            source=message.findtext("ToUserName"),
            target=message.findtext("FromUserName"),
            content=FIXED_TEXT,
            time=int(time.time()),
        ).render()
        if crypto is not None:
            reply = crypto.encrypt_message(reply, nonce, str(int(time.time())))
        return Response(reply, media_type="application/xml")

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route(wechat.DEFAULT_PATH, receive, methods=["POST"]),
            Route(HEALTH_PATH, healthz),
        ]
    )


async def run(port: int, *, aes: bool) -> None:
    config = uvicorn.Config(
        build_app(aes=aes),
        host="127.0.0.1",
        port=port,
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    tune_gc()
    await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aes", action="store_true", help="safe mode (AES), as WeChat's")
    args = parser.parse_args()
    asyncio.run(run(args.port, aes=args.aes))


if __name__ == "__main__":
    main()
