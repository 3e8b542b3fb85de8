"""Find jobs: ``MODULE[:NAME]`` for one, a package for all of them.

Extra import roots come from ``JOBRUNNER_PATH`` (colon separated), so admins can keep their
own job modules outside the install, e.g. ``/etc/jobrunner/jobs``. The package of jobs, when
none is named, is ``default_package()``: ``$JOBRUNNER_PACKAGE``, else ``jobs``.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import TYPE_CHECKING

from jobrunner.declaration import Job
from jobrunner.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["DEFAULT_PACKAGE", "PACKAGE_ENV", "default_package", "discover", "load_job", "jobs_in"]

DEFAULT_PACKAGE = "jobs"
PACKAGE_ENV = "JOBRUNNER_PACKAGE"

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_path_added = False


def _add_search_path() -> None:
    global _path_added
    if _path_added:
        return
    _path_added = True
    extra = [p for p in os.environ.get("JOBRUNNER_PATH", "").split(":") if p]
    for entry in reversed(extra):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # ``python -m`` puts the working directory first; the console script does not. Make both
    # find ./jobs the same way, after the installed packages.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())


def _import(module: str) -> ModuleType:
    if not _MODULE.match(module):
        raise ConfigError(f"{module!r} is not a module path (e.g. jobs.wp_backup)")
    _add_search_path()
    try:
        return importlib.import_module(module)
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise ConfigError(f"no module named {module!r} (check the name and JOBRUNNER_PATH)") from None
        raise ConfigError(f"module {module!r} cannot be imported: it needs {exc.name!r}") from None
    except SyntaxError as exc:
        raise ConfigError(
            f"module {module!r} failed to import: {exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}"
        ) from None
    except Exception as exc:  # a broken job module is a configuration error, not a crash
        raise ConfigError(f"module {module!r} failed to import: {type(exc).__name__}: {exc}") from None


def jobs_in(module_obj: ModuleType) -> list[Job]:
    """The jobs a module declares, in definition order."""
    return [value for value in vars(module_obj).values() if isinstance(value, Job)]


def load_job(ref: str) -> Job:
    """Import ``MODULE[:NAME]`` and return its job; without NAME the module must hold exactly one."""
    module, _, name = ref.partition(":")
    mod = _import(module)
    found = jobs_in(mod)
    if name:
        for candidate in found:
            if candidate.name == name:
                return candidate
        have = ", ".join(j.name for j in found) or "none"
        raise ConfigError(f"module {module!r} has no job {name!r} (jobs: {have})")
    if not found:
        raise ConfigError(f"module {module!r} declares no @job")
    if len(found) > 1:
        names = ", ".join(j.name for j in found)
        raise ConfigError(f"module {module!r} declares {len(found)} jobs ({names}): name one as {module}:NAME")
    return found[0]


def default_package() -> str:
    """The package of jobs when none is named: ``$JOBRUNNER_PACKAGE``, else ``jobs``."""
    return os.environ.get(PACKAGE_ENV, "").strip() or DEFAULT_PACKAGE


def discover(package: str | None = None) -> list[Job]:
    """Every job in every module of ``package`` (default: ``default_package()``), not
    recursive, sorted by name."""
    import pkgutil

    if package is None:
        package = default_package()
    pkg = _import(package)
    jobs: list[Job] = jobs_in(pkg)
    for info in sorted(pkgutil.iter_modules(getattr(pkg, "__path__", [])), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        jobs.extend(jobs_in(_import(f"{package}.{info.name}")))
    seen: dict[str, Job] = {}
    for found in jobs:
        other = seen.get(found.unit)
        if other is not None and other is not found:
            raise ConfigError(f"jobs {other.ref} and {found.ref} both use the unit name {found.unit!r}")
        seen[found.unit] = found
    return sorted(seen.values(), key=lambda j: j.name)
