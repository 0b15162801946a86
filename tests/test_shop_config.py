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
    with pytest.raises(ConfigError) as caught:
        load_shop_config(path)
    problems = {key: reason for _, key, reason in caught.value.problems}
    assert all(file == str(path) for file, _, _ in caught.value.problems)
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
