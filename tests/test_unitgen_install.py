"""install/uninstall into a --root temp dir: idempotent, diffs, never clobbers, exact removal."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from jobrunner.unitgen.install import MANIFEST, InstallConflict, install, uninstall
from jobrunner.unitgen.render import render_all
from jobrunner.unitgen.testing import directives, job_package
from jobrunner.unitgen.write import write_rendered

JOBS = """
from jobrunner.declaration import job
@job(schedule="02:15", user="www-data", log_file="/var/log/jobrunner/a.log", env_files=["/etc/wp.env"])
def alpha(ctx): pass
@job(schedule="hourly", network=True)
def beta(ctx): pass
@job(user="www-data")
def gamma(ctx): pass
"""


@pytest.fixture
def units(tmp_path, monkeypatch) -> Path:
    package = job_package(tmp_path / "src", {"m": JOBS})
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    out = tmp_path / "units"
    write_rendered(render_all(package), out, prune=True)
    return out


def run_install(units: Path, root: Path, **kw) -> str:
    buf = io.StringIO()
    install(units, root, out=buf, **kw)
    return buf.getvalue()


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_install_is_idempotent_and_shows_a_diff(units, tmp_path):
    root = tmp_path / "root"
    first = run_install(units, root, env="staging")
    assert "+++ b/etc/systemd/system/alpha.service" in first and "--- /dev/null" in first
    assert "not running systemctl: --root was given" in first
    files = tree(root)
    expected = {
        "etc/systemd/system/alert-failure@.service",
        "etc/systemd/system/alpha.service",
        "etc/systemd/system/alpha.timer",
        "etc/systemd/system/alpha.service.d/staging.conf",
        "etc/systemd/system/beta.service",
        "etc/systemd/system/beta.timer",
        "etc/systemd/system/beta.service.d/staging.conf",
        "etc/systemd/system/gamma.service",
        "etc/systemd/system/gamma.service.d/staging.conf",
        "etc/tmpfiles.d/jobrunner.conf",
        "etc/logrotate.d/jobrunner",
        MANIFEST,
    }
    assert set(files) == expected
    assert files["etc/systemd/system/alpha.service"] == (units / "alpha.service").read_text()
    dropin = directives(files["etc/systemd/system/alpha.service.d/staging.conf"], "Service")
    assert dropin["EnvironmentFile"] == [
        "",
        "-/etc/jobrunner/jobrunner.env",
        "/etc/wp.env",
        "-/etc/default/alpha",
        "-/etc/jobrunner/jobrunner-staging.env",
        "-/etc/default/alpha-staging",
    ]
    second = run_install(units, root, env="staging")
    assert "---" not in second and "nothing to change" in second
    assert tree(root) == files


def test_dry_run_writes_nothing(units, tmp_path):
    root = tmp_path / "root"
    out = run_install(units, root, dry_run=True)
    assert "+++ b/etc/systemd/system/beta.timer" in out
    assert not root.exists() or tree(root) == {}


def test_refuses_foreign_files_unless_forced(units, tmp_path):
    root = tmp_path / "root"
    foreign = root / "etc/systemd/system/beta.service"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(InstallConflict, match="beta.service"):
        run_install(units, root)
    assert foreign.read_text() == "[Service]\nExecStart=/bin/true\n"
    assert not (root / MANIFEST).exists() and not (root / "etc/systemd/system/alpha.service").exists()
    out = run_install(units, root, force=True)
    assert "-ExecStart=/bin/true" in out
    assert foreign.read_text() == (units / "beta.service").read_text()


def test_refuses_to_overwrite_local_edits(units, tmp_path):
    root = tmp_path / "root"
    run_install(units, root)
    edited = root / "etc/systemd/system/alpha.timer"
    edited.write_text(edited.read_text() + "# local edit\n")
    (units / "alpha.timer").write_text((units / "alpha.timer").read_text().replace("02:15", "03:15"))
    with pytest.raises(InstallConflict, match="alpha.timer"):
        run_install(units, root)
    with pytest.raises(InstallConflict):
        uninstall(root, out=io.StringIO())
    assert "# local edit" in edited.read_text()


def test_removes_what_is_no_longer_rendered(units, tmp_path):
    root = tmp_path / "root"
    run_install(units, root, env="prod")
    (units / "beta.service").unlink()
    (units / "beta.timer").unlink()
    out = run_install(units, root)  # no --env now: the prod drop-ins go too
    assert "+++ /dev/null" in out
    left = tree(root)
    assert not any("beta" in p or "prod.conf" in p for p in left)
    assert not (root / "etc/systemd/system/alpha.service.d").exists()
    manifest = json.loads(left[MANIFEST])["files"]
    assert set(manifest) == {"/" + p for p in left if p != MANIFEST}


def test_uninstall_removes_exactly_what_install_wrote(units, tmp_path):
    root = tmp_path / "root"
    mine = root / "etc/systemd/system/unrelated.service"
    mine.parent.mkdir(parents=True)
    mine.write_text("[Service]\nExecStart=/bin/true\n")
    (root / "etc/logrotate.d").mkdir(parents=True)
    (root / "etc/logrotate.d/nginx").write_text("/var/log/nginx/*.log {}\n")
    before = tree(root)
    run_install(units, root, env="staging")
    assert len(tree(root)) > len(before)
    buf = io.StringIO()
    removed = uninstall(root, out=buf)
    assert "/etc/systemd/system/alpha.timer" in removed and "remove /etc/systemd/system/alpha.timer" in buf.getvalue()
    assert tree(root) == before
    assert not (root / "etc/systemd/system/alpha.service.d").exists()
    again = io.StringIO()
    assert uninstall(root, out=again) == [] and "nothing installed" in again.getvalue()


def test_template_timers_are_never_enabled_or_disabled_by_install(tmp_path):
    """A template's timer (``wp-backup@.timer``) cannot be enabled without an instance:
    ``units install`` leaves it to ``jobrunner instances add`` (and removing a template does not
    try ``disable`` on it); the plain timer of an ``instances="optional"`` job is enabled as ever."""
    from jobrunner.declaration import job
    from jobrunner.unitgen.install import plan_install
    from jobrunner.unitgen.render import render_jobs

    @job(schedule="daily", instances="optional")
    def both_ways(ctx): ...

    out = tmp_path / "units"
    write_rendered(render_jobs([both_ways]), out, prune=False)
    root = tmp_path / "root"
    plan = plan_install(out, root)
    assert plan.timers == ["both-ways.timer"]
    install(out, root, out=io.StringIO())
    (out / "both-ways@.timer").unlink()
    (out / "both-ways@.service").unlink()
    again = plan_install(out, root)
    assert any(path.endswith("both-ways@.timer") for path, _, new in again.changes if new is None)
    assert again.removed_timers == []
