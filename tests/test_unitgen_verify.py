"""The real ``systemd-analyze verify`` and ``security --offline=true`` on rendered units."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobrunner.unitgen.render import render_all
from jobrunner.unitgen.testing import job_package
from jobrunner.unitgen.verify import security_score, unit_files, verify_dir, verify_problems
from jobrunner.unitgen.write import write_rendered

MATRIX = ["from jobrunner.declaration import job, Lock"]
for level in ("basic", "standard", "strict"):
    for user in ("www-data", None):
        for net in (True, False):
            name = f"{level}_{'user' if user else 'root'}_{'net' if net else 'offline'}"
            MATRIX.append(
                f"@job(schedule='*-*-* 02:15', hardening={level!r}, user={user!r}, network={net}, "
                f"lock=Lock(wait='30s'), timeout='1h', write_paths=['/srv/out-{user or 'root'}'], "
                f"log_file='/var/log/jobrunner/{name}.log')\ndef {name}(ctx): pass\n"
            )
MATRIX.append("@job(hardening='strict', user='www-data')\ndef unscheduled(ctx): pass\n")

#: The measured goal: exposure at most this, by (level, network).
GOAL = {"strict": (1.5, 2.0), "standard": (4.0, 4.0), "basic": (8.0, 8.0)}


@pytest.fixture(scope="module")
def units_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("jobs")
    package = job_package(root, {"matrix": "\n".join(MATRIX)})
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(root))
    try:
        out = tmp_path_factory.mktemp("units")
        write_rendered(render_all(package), out, prune=True)
        yield out
    finally:
        mp.undo()


def test_systemd_analyze_verify_passes(units_dir):
    files = unit_files(units_dir)
    assert len(files) == 1 + 12 * 2 + 1
    assert verify_problems(files) == []


def test_verify_reports_real_problems(tmp_path, units_dir):
    text = (units_dir / "strict-user-net.service").read_text()
    (tmp_path / "broken.service").write_text(
        text.replace("Type=oneshot", "Type=oneshot\nBogusDirective=1\nExecStartPost=/nonexistent/tool")
    )
    problems = verify_problems([tmp_path / "broken.service"])
    assert any("BogusDirective" in p for p in problems)
    assert any("/nonexistent/tool" in p for p in problems)
    assert not any("jobrunner/bin/python" in p or "/usr/local/jr" in p for p in problems)


@pytest.mark.parametrize("level", ["basic", "standard", "strict"])
@pytest.mark.parametrize("user", ["user", "root"])
@pytest.mark.parametrize("net", ["net", "offline"])
def test_security_scores(units_dir, level, user, net):
    score = security_score(units_dir / f"{level}-{user}-{net}.service")
    goal = GOAL[level][net == "net"]
    assert 0 < score.exposure <= goal, f"{score.unit}: {score.exposure}"
    assert score.threshold == goal and score.ok


def test_verify_dir_scores_everything_and_applies_thresholds(units_dir):
    scores, problems = verify_dir(units_dir)
    assert problems == []
    assert {s.unit for s in scores} == {p.name for p in unit_files(units_dir) if p.suffix == ".service"}
    scores, problems = verify_dir(units_dir, threshold=0.5)
    assert problems and all(p.startswith("security: ") and "over the threshold 0.5" in p for p in problems)
    assert len(problems) == sum(1 for s in scores if s.exposure > 0.5)
