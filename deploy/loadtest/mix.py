"""The traffic mix of the load test and the users that make each kind's rate (no Locust import:
``run.sh`` asks it for Locust's user count with a plain Python)."""

from __future__ import annotations

import math
import os

RATE = float(os.environ.get("LOADTEST_RATE", "2"))
MULTIPLIER = float(os.environ.get("LOADTEST_MULTIPLIER", "1"))
# Each simulated user sends at most this many requests a second; users per kind = rate / this.
PER_USER_RATE = float(os.environ.get("LOADTEST_PER_USER_RATE", "0.5"))
# Shares of RATE x MULTIPLIER requests/s; uploads come on top, at a fixed low rate.
MIX = {"ws_chat": 0.40, "rest_chat": 0.15, "openai": 0.25, "search": 0.20}


def users_for(kind: str) -> tuple[int, float]:
    """(users, requests/s per user) that give this kind its share of the target rate."""
    rate = RATE * MULTIPLIER * MIX[kind]
    users = max(1, math.ceil(rate / PER_USER_RATE))
    return users, rate / users


def total_users() -> int:
    """Locust's -u: every user of every kind plus the uploader."""
    return sum(users_for(kind)[0] for kind in MIX) + 1


if __name__ == "__main__":
    print(total_users())
