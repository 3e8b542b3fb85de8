"""The words every view judges a job in: the four Nagios states and the conditions.

One vocabulary, below health, the fleet, the page, metrics and messages, so each says a job
is ``late``, ``failing`` or ``running_long`` the same way (``JobHealth.condition``). Every
finding names its condition (``JobHealth.find(status, reason, condition)``, a word of
``CONDITIONS``): docs/design.md "State, metrics, health" has the table of them and how to add one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONDITIONS",
    "CRITICAL",
    "NAMES",
    "OK",
    "SEVERITY",
    "UNKNOWN",
    "WARNING",
    "Finding",
    "JobHealth",
    "overall",
    "worst",
]

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
SEVERITY = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}
# What a job can be in, most telling first (``JobHealth.condition``). The six first words keep
# their order (a job's ``condition`` stays what it was); the words after them were findings
# without a condition before.
CONDITIONS = (
    "silenced",
    "running_long",
    "late",
    "failing",
    "flapping",
    "duration",
    "unit_failed",
    "timer_inactive",
    "skipping",
    "never_ran",
    "not_installed",
    "unknown",
    "silent",
    "unreported",
)


def worst(states: Sequence[int]) -> int:
    return max(states, key=SEVERITY.__getitem__, default=OK)


@dataclass
class Finding:
    """One thing found about a job: its status, the reason as printed, and its condition."""

    status: int
    reason: str
    condition: str


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
    findings: list[Finding] = field(default_factory=list)

    def find(self, status: int, reason: str, condition: str) -> Finding:
        """Record a finding: a reason (a note when OK), the job's status the worst so far, and
        its condition, a word of ``CONDITIONS`` (another word is a bug: ValueError)."""
        if condition not in CONDITIONS:
            raise ValueError(f"condition {condition!r} is not one of CONDITIONS (jobrunner/rules/verdict.py)")
        found = Finding(status, reason, condition)
        self.findings.append(found)
        self.status = worst([self.status, status])
        (self.reasons if status != OK else self.notes).append(reason)
        self._add(condition)
        return found

    def amend(self, found: Finding, text: str, condition: str) -> None:
        """Add ``text`` to a finding's reason (``reason; text``); the job is in ``condition`` too."""
        if condition not in CONDITIONS:
            raise ValueError(f"condition {condition!r} is not one of CONDITIONS (jobrunner/rules/verdict.py)")
        where = self.reasons if found.status != OK else self.notes
        at = next(i for i, r in enumerate(where) if r is found.reason)
        found.reason = where[at] = f"{found.reason}; {text}"
        self._add(condition)

    def silence(self, text: str) -> None:
        """A silence in force: what was found is capped at WARNING, and a silenced job with a
        problem is WARNING, never OK; ``text`` leads its reasons (its notes when OK)."""
        if self.status in (WARNING, CRITICAL):
            self.status = WARNING
            self.reasons.insert(0, text)
        else:
            self.notes.insert(0, text)
        self._add("silenced")

    def _add(self, condition: str) -> None:
        if condition not in self.conditions:
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
