"""Judgement without I/O of its own: schedules, alerting rules, skips."""
