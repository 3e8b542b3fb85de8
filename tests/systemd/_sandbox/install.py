"""``install_project``: the checkout installed inside as a user would (a venv on Debian's python3,
a normal wheel, offline from a wheelhouse copied into R)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from .base import SandboxBase
from .common import HOST_PYTHON, InstallResult, SandboxError
from .host import _makedirs
from .wheels import _build_project_wheel, _dependency_wheelhouse


class Install(SandboxBase):
    """Mixed into Sandbox (core.py)."""

    def install_project(
        self,
        checkout_dir: str | os.PathLike,
        venv: str = "/opt/jobrunner",
        extras: Sequence[str] = (),
        link_bin: str | None = "/usr/local/bin/jobrunner",
        with_pip: bool = True,
        timeout: float = 600,
    ) -> InstallResult:
        """Install the checkout as a user would: a venv on Debian's python3, the project as a
        normal (non-editable) wheel, byte-compiled at install time (read-only /opt later).

        Host side: wheels of the dependencies (cached, see _dependency_wheelhouse) and of the
        project (built fresh from a scratch copy of CHECKOUT_DIR) are copied into the overlay
        at /var/cache/jobrunner-wheelhouse; inside, pip installs from there with --no-index.
        Nothing inside refers to CHECKOUT_DIR afterwards.  Re-running replaces the venv."""
        t0 = time.monotonic()
        checkout = Path(checkout_dir).resolve()
        if not (checkout / "pyproject.toml").is_file():
            raise SandboxError(f"{checkout} has no pyproject.toml")
        deps = _dependency_wheelhouse(checkout, self.cache_dir, extras)
        project_wheel = _build_project_wheel(checkout, deps, self.cache_dir)
        try:
            wh_inside = "/var/cache/jobrunner-wheelhouse"
            host_wh = self.host_path(wh_inside)
            if os.path.exists(host_wh):
                shutil.rmtree(host_wh)
            _makedirs(host_wh)
            for whl in [*deps.glob("*.whl"), project_wheel]:
                shutil.copyfile(whl, os.path.join(host_wh, whl.name))
                os.chmod(os.path.join(host_wh, whl.name), 0o644)
        finally:
            shutil.rmtree(project_wheel.parent, ignore_errors=True)
        pip_env = {
            "PIP_CONFIG_FILE": "/dev/null",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_CACHE_DIR": "1",
            "PIP_NO_INPUT": "1",
        }
        req = f"{wh_inside}/{project_wheel.name}"
        if extras:
            req = f"jobrunner[{','.join(extras)}] @ file://{req}"
        install = ["install", "--no-index", "--find-links", wh_inside, "--only-binary", ":all:"]
        # `python3 -m venv` runs ensurepip, which on Debian installs pip from
        # /usr/share/python-wheels.  Doing that in the same pip run as the project is the same
        # result (a venv with pip) in ~2.5 s less: run pip straight from its wheel.
        pip_whl = self.run("ls /usr/share/python-wheels/pip-*.whl 2>/dev/null | tail -n1", check=False).stdout.strip()
        if with_pip and pip_whl:
            self.run([HOST_PYTHON, "-m", "venv", "--clear", "--without-pip", venv], timeout=timeout)
            self.run([f"{venv}/bin/python", f"{pip_whl}/pip", *install, pip_whl, req], env=pip_env, timeout=timeout)
        else:
            self.run(
                [HOST_PYTHON, "-m", "venv", "--clear", *([] if with_pip else ["--without-pip"]), venv], timeout=timeout
            )
            pip = [f"{venv}/bin/python", "-m", "pip"] if with_pip else [f"{venv}/bin/python", f"{pip_whl}/pip"]
            self.run([*pip, *install, req], env=pip_env, timeout=timeout)
        if link_bin:
            self.run(["ln", "-sfn", f"{venv}/bin/jobrunner", link_bin])
        freeze = self.run(
            [f"{venv}/bin/python", *(["-m", "pip"] if with_pip else [f"{pip_whl}/pip"]), "freeze", "--all"], env=pip_env
        ).stdout.splitlines()
        version = project_wheel.name.split("-")[1]
        self.installed = InstallResult(
            venv=venv,
            python=f"{venv}/bin/python",
            wheel=project_wheel.name,
            version=version,
            wheelhouse=wh_inside,
            freeze=freeze,
            seconds=time.monotonic() - t0,
        )
        return self.installed
