"""The shop configuration: shipped defaults load, mistakes are reported with file, key and reason,
and syncing is an idempotent upsert."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from db.models import Reward, Service, Store, Tier
from db.session import Database
from domain.errors import ConfigError
from domain.shop import DEFAULT_CONFIG, load_shop_config, sync_shop


def write_config(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    mutate(raw)
    path = tmp_path / "shop.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def problems_in(path: Path) -> dict[str, str]:
    """Every problem loading `path` reports, key → reason, each naming that file."""
    with pytest.raises(ConfigError) as caught:
        load_shop_config(path)
    assert all(file == str(path) for file, _, _ in caught.value.problems)
    return {key: reason for _, key, reason in caught.value.problems}


def test_defaults_load_when_no_file(tmp_path: Path) -> None:
    config = load_shop_config(tmp_path / "shop.yaml")
    assert [t.code for t in config.tiers] == ["standard", "silver", "gold", "diamond"]
    assert [float(t.multiplier) for t in config.tiers] == [1.0, 1.2, 1.5, 2.0]
    assert config.points.expiry_months == 24


def test_an_explicitly_named_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_shop_config(tmp_path / "chain.yaml")
    assert caught.value.problems[0][2] == "file not found"


def test_every_problem_is_reported_with_key_and_reason(tmp_path: Path) -> None:
    def break_it(raw: dict) -> None:
        raw["stores"][0]["timezone"] = "Mars/Olympus"
        raw["stores"][0]["opening_hours"]["mon"] = ["18:00-09:00"]
        raw["services"][0]["category"] = "spa"

    path = write_config(tmp_path, break_it)
    problems = problems_in(path)
    assert "unknown time zone" in problems["stores.0.timezone"]
    assert "closes before it opens" in problems["stores.0.opening_hours"]
    assert "services.0.category" in problems


def test_tier_thresholds_must_rise(tmp_path: Path) -> None:
    path = write_config(tmp_path, lambda raw: raw["tiers"][2].update(threshold=1000))
    with pytest.raises(ConfigError, match="thresholds must rise"):
        load_shop_config(path)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text("stores:\n  - code: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_shop_config(path)
    assert caught.value.problems[0][1].startswith("line ")


async def test_sync_is_an_idempotent_upsert(db: Database, tmp_path: Path) -> None:
    def rename(raw: dict) -> None:
        raw["stores"][0]["name"] = "旗舰店"
        raw["services"] = [s for s in raw["services"] if s["code"] not in ("tyres", "repair")]

    config = load_shop_config(write_config(tmp_path, rename))
    async with db.transaction() as session:
        await sync_shop(session, config)
    async with db.transaction() as session:
        await sync_shop(session, config)
    async with db.read() as session:
        stores = (await session.scalars(select(Store))).all()
        active_services = await session.scalar(
            select(func.count()).select_from(Service).where(Service.active)
        )
        tiers = (await session.scalars(select(Tier).order_by(Tier.rank))).all()
        rewards = await session.scalar(select(func.count()).select_from(Reward))
    assert [(s.code, s.name) for s in stores] == [("main", "旗舰店")]
    assert active_services == 4  # the two dropped ones are deactivated, not deleted
    assert [(t.code, t.threshold_cents, t.multiplier_permille) for t in tiers] == [
        ("standard", 0, 1000),
        ("silver", 200_000, 1200),
        ("gold", 800_000, 1500),
        ("diamond", 2_000_000, 2000),
    ]
    assert rewards == 3


def test_the_shipped_wechat_menu_fits_wechats_limits() -> None:
    menu = load_shop_config(None).wechat_menu
    assert [button.name for button in menu] == ["积分", "预约", "我的"]
    assert all(button.sub_buttons and button.key is None for button in menu)


def test_wechat_menu_mistakes_are_reported_with_key_and_reason(tmp_path: Path) -> None:
    def break_it(raw: dict) -> None:
        menu = raw["wechat_menu"]
        menu[0]["name"] = "积分商城入口"  # 18 bytes
        menu[0]["sub_buttons"][0] = {"name": "x" * 61, "key": "points"}
        menu[0]["sub_buttons"][1] = {"name": "兑换", "key": "rewards", "url": "https://a.cn"}
        menu[0]["sub_buttons"][2] = {"name": "券", "key": "my coupons"}
        menu[0]["sub_buttons"][3] = {"name": "官网", "url": "ftp://shop.example"}
        menu[1]["sub_buttons"] = [{"name": f"s{i}", "key": "book"} for i in range(6)]
        menu[2] = {"name": "我的"}

    path = write_config(tmp_path, break_it)
    problems = problems_in(path)
    assert "18 bytes in UTF-8; WeChat allows 16" in problems["wechat_menu.0.name"]
    assert "61 bytes in UTF-8; WeChat allows 60" in problems["wechat_menu.0.sub_buttons.0.name"]
    assert "exactly one of key, url" in problems["wechat_menu.0.sub_buttons.1"]
    assert "neither an intent name" in problems["wechat_menu.0.sub_buttons.2.key"]
    assert "not an http:// or https://" in problems["wechat_menu.0.sub_buttons.3.url"]
    assert "at most 5" in problems["wechat_menu.1.sub_buttons"]
    assert "exactly one of key, url, sub_buttons" in problems["wechat_menu.2"]


def test_wechat_menu_has_at_most_three_buttons_and_long_keys_are_refused(tmp_path: Path) -> None:
    def four(raw: dict) -> None:
        raw["wechat_menu"].append({"name": "更多", "url": "https://shop.example/more"})

    with pytest.raises(ConfigError, match="at most 3"):
        load_shop_config(write_config(tmp_path, four))

    def long_key(raw: dict) -> None:
        raw["wechat_menu"][0]["sub_buttons"][0]["key"] = "go:" + "a" * 130

    with pytest.raises(ConfigError, match="133 bytes in UTF-8; WeChat allows 128"):
        load_shop_config(write_config(tmp_path, long_key))


def test_a_configuration_without_a_wechat_menu_loads(tmp_path: Path) -> None:
    path = write_config(tmp_path, lambda raw: raw.pop("wechat_menu"))
    assert load_shop_config(path).wechat_menu == []
