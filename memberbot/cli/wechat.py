"""`memberbot wechat …`: setting up the WeChat Official Account.

`menu` shows the menu the shop configuration describes (`wechat_menu`) and the JSON WeChat
would get; with `--publish` it sends it through the API (`bot.channels.wechat_admin`). The
menu is checked before anything is sent: WeChat's sizes when the configuration loads, and
here that every click key reaches something the chat answers. Without the WeChat settings
`--publish` stops before touching the database or the network, and a refusal prints
WeChat's error code and exits 1.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

from domain.shop import WeChatMenuButton, WeChatMenuItem, config_source, load_shop_config
from memberbot import runtime
from memberbot.cli.common import clear_errors, console, run
from memberbot.settings import get_settings
from memberbot.staffview import plain

app = typer.Typer(help="Set up the WeChat Official Account.", no_args_is_help=True)


@app.command("menu")
def menu(
    publish: Annotated[
        bool, typer.Option("--publish", help="Send it to WeChat (replaces the current menu).")
    ] = False,
) -> None:
    """The Official Account's menu from the shop configuration, and the JSON WeChat gets."""
    # WeChat's client and the composition root load only for the commands that call WeChat.
    from bot.channels import wechat_admin
    from memberbot.app import wechat_api_access

    settings = get_settings()
    with clear_errors():
        config = load_shop_config(settings.shop_config)
        payload = wechat_admin.checked_menu(config, str(config_source(settings.shop_config)))
    console.print(_tree(config.wechat_menu))
    console.print(json.dumps(payload, ensure_ascii=False, indent=2), markup=False, highlight=False)
    if not publish:
        console.print("Not published; add --publish to send it to WeChat.")
        return
    with clear_errors():
        access = wechat_api_access(settings)

    async def work(rt: runtime.Runtime) -> dict[str, Any]:
        api = access.client(rt.db)
        try:
            await wechat_admin.publish_menu(api, payload)
            return await wechat_admin.published_menu(api)
        finally:
            api.close()

    with clear_errors(wechat_admin.AdminCallFailed):
        shown = run(work)
    buttons = shown.get("menu", {}).get("button", [])
    console.print(f"Published: WeChat now holds a menu of {len(buttons)} button(s).")


def _tree(menu: list[WeChatMenuButton]) -> Tree:
    tree = Tree(Text("WeChat menu"))
    for entry in menu:
        branch = tree.add(_label(entry))
        for sub in entry.sub_buttons or ():
            branch.add(_label(sub))
    return tree


def _label(item: WeChatMenuItem) -> Text:
    if item.key is not None:
        return plain(f"{item.name} → click {item.key}")
    if item.url is not None:
        return plain(f"{item.name} → page {item.url}")
    return plain(item.name)
