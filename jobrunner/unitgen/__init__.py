"""systemd unit rendering, verification and installation for jobrunner jobs.

Submodules are independent on purpose: ``calendar`` (next elapses, for ``list``/``health``)
imports nothing of the renderer. ``render_all`` is re-exported lazily for drift tests::

    from jobrunner.unitgen import render_all
    assert render_all("jobs") == {p: (units / p).read_text() for p in render_all("jobs")}
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_all"]


def __getattr__(name: str) -> Any:
    if name == "render_all":
        from jobrunner.unitgen.render import render_all

        return render_all
    raise AttributeError(f"module 'jobrunner.unitgen' has no attribute {name!r}")
