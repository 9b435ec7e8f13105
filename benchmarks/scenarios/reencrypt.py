"""Scenario 7: re-encryption throughput (rows/s) by batch size and workers.

Written against the ops helper's :mod:`piiguard.rotation` API; skipped until it lands.
"""

from __future__ import annotations

from benchmarks.harness import Context
from benchmarks.scenarios import schema

NAME = "reencrypt"
TITLE = "Re-encryption throughput (rows/s) by batch size and workers"
BASELINES = ()


def available() -> str | None:
    reason = schema.piiguard_available()
    if reason:
        return reason
    try:
        import piiguard.rotation as rotation
    except ImportError as exc:
        return f"piiguard.rotation not importable yet: {exc}"
    if not hasattr(rotation, "reencrypt"):
        return "piiguard.rotation has no reencrypt() yet"
    return None


def run(ctx: Context) -> list[dict]:
    raise NotImplementedError("written when piiguard.rotation lands")


def targets(records: list[dict], ctx: Context) -> list[dict]:
    return []
