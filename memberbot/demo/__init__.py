"""`memberbot demo`: a deterministic demo chain a newcomer can look around in one command.

The data is generated as the CSV files a real shop would export from its POS or dealer system
(`generator`) and goes in through the real importer (`chain`), so the demo shows (and exercises)
the same path a shop takes on its first day. What members then do with their points, prepaid
money, punch cards and coupons is played through the real use cases (`activity`). The closing
summary is read back with the domain's own reports (`summary`) and drawn with rich (`render`).

The demo never touches a shop's database: it writes its own SQLite file by default and refuses
any database that holds members or stores it did not create.
"""

from memberbot.demo.chain import (
    DEFAULT_DATABASE_URL,
    DEFAULT_MEMBERS,
    DEFAULT_SEED,
    DEMO_SHOP,
    DemoOptions,
    NotADemoDatabase,
    build,
    run,
)
from memberbot.demo.render import render
from memberbot.demo.summary import DemoSummary

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_MEMBERS",
    "DEFAULT_SEED",
    "DEMO_SHOP",
    "DemoOptions",
    "DemoSummary",
    "NotADemoDatabase",
    "build",
    "render",
    "run",
]
