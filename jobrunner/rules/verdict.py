"""The words every view judges a job in: the four Nagios states and the conditions.

One vocabulary, below health, the fleet, the page, metrics and messages, so each says a job
is ``late``, ``failing`` or ``running_long`` the same way (``JobHealth.condition``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONDITIONS", "CRITICAL", "NAMES", "OK", "SEVERITY", "UNKNOWN", "WARNING", "JobHealth", "overall", "worst"]

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
SEVERITY = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}
# What a job can be in, most telling first (``JobHealth.condition``).
CONDITIONS = ("silenced", "running_long", "late", "failing", "flapping", "duration")


def worst(states: Sequence[int]) -> int:
    return max(states, key=SEVERITY.__getitem__, default=OK)


@dataclass
class JobHealth:
    """The verdict on one job, with the reasons and every fact it was drawn from."""

    job: str
    unit: str
    status: int = OK
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    conditions: list[str] = field(default_factory=list)

    def find(self, status: int, reason: str, condition: str | None = None) -> None:
        self.status = worst([self.status, status])
        (self.reasons if status != OK else self.notes).append(reason)
        if condition and condition not in self.conditions:
            self.conditions.append(condition)

    @property
    def condition(self) -> str:
        """The one word for the job's state: the first of ``CONDITIONS`` it is in, else ok."""
        return next((c for c in CONDITIONS if c in self.conditions), "ok")

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "unit": self.unit,
            "status": NAMES[self.status],
            "exit_code": self.status,
            "condition": self.condition,
            "conditions": [c for c in CONDITIONS if c in self.conditions],
            "reasons": self.reasons,
            "notes": self.notes,
            **self.facts,
        }


def overall(results: Sequence[JobHealth]) -> int:
    return worst([r.status for r in results])
