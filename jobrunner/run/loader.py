"""Find jobs: ``MODULE[:NAME]`` or a job's name for one, a package for all of them.

The package of jobs, when none is named, is ``default_package()``: ``$JOBRUNNER_PACKAGE``,
else ``jobs``. A user's own jobs live in the **site jobs directory**, ``/etc/jobrunner/jobs``
(``$JOBRUNNER_JOBS_DIR``; empty: none): its modules join the default package, so
``/etc/jobrunner/jobs/site_backup.py`` is ``jobs.site_backup``, listed, judged and run by
name (``jobrunner run site_backup``) like a shipped job; a shipped module of the same name
wins. Root never imports code another user can change: the directory, every parent, every
entry and ``__pycache__`` must belong to root (or to the user running jobrunner) and not be
writable by group or others (a sticky parent such as ``/tmp`` excepted), else the whole
directory is left out and ``site_dir_problem()`` says why (``list`` and ``health`` show it).

Extra import roots come from ``JOBRUNNER_PATH`` (colon separated), for packages of one's own.
"""

from __future__ import annotations

import importlib
import os
import re
import stat
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from jobrunner.declaration import Job
from jobrunner.errors import ConfigError

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "DEFAULT_PACKAGE",
    "JOBS_DIR_ENV",
    "PACKAGE_ENV",
    "SITE_JOBS_DIR",
    "Broken",
    "closest",
    "default_package",
    "discover",
    "discover_report",
    "jobs_in",
    "load_job",
    "site_dir_problem",
    "site_jobs_dir",
]

DEFAULT_PACKAGE = "jobs"
PACKAGE_ENV = "JOBRUNNER_PACKAGE"
SITE_JOBS_DIR = "/etc/jobrunner/jobs"
JOBS_DIR_ENV = "JOBRUNNER_JOBS_DIR"

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


def site_jobs_dir() -> str | None:
    """The site jobs directory: ``$JOBRUNNER_JOBS_DIR`` (empty: none), else ``/etc/jobrunner/jobs``."""
    value = os.environ.get(JOBS_DIR_ENV)
    if value is None:
        return SITE_JOBS_DIR
    return value.strip() or None


_site_problems: dict[str, str] = {}


def site_dir_problem() -> str | None:
    """Why the site jobs directory was left out (untrusted), or None."""
    found = site_jobs_dir()
    return _site_problems.get(found) if found else None


def _untrusted(path: str, info: os.stat_result, *, sticky_ok: bool) -> str | None:

    if info.st_uid not in (0, os.geteuid()):
        return f"{path} belongs to uid {info.st_uid}"
    if info.st_mode & 0o022 and not (sticky_ok and info.st_mode & stat.S_ISVTX):
        return f"{path} is writable by group or others"
    return None


def _site_dir_check(directory: str) -> str | None:
    """Why root must not import from ``directory`` (another user could change its code), or None."""

    real = os.path.realpath(directory)
    parts = real.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i]) or "/"
        why = _untrusted(parent, os.stat(parent), sticky_ok=True)
        if why:
            return why
    why = _untrusted(real, os.stat(real), sticky_ok=False)
    if why:
        return why
    for entry in sorted(os.listdir(real)):
        path = os.path.join(real, entry)
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            return f"{path} is a symbolic link"
        why = _untrusted(path, info, sticky_ok=False)
        if why:
            return why
        if entry == "__pycache__" and stat.S_ISDIR(info.st_mode):
            for cached in sorted(os.listdir(path)):
                why = _untrusted(os.path.join(path, cached), os.lstat(os.path.join(path, cached)), sticky_ok=False)
                if why:
                    return why
    return None


def _join_site_dir(pkg: ModuleType) -> None:
    """Append the site jobs directory to the default package's ``__path__``, when it is trusted."""
    directory = site_jobs_dir()
    search = getattr(pkg, "__path__", None)
    if directory is None or search is None or directory in list(search):
        return
    if not os.path.isdir(directory):
        return
    try:
        why = _site_dir_check(directory)
    except OSError as exc:
        why = f"{directory}: {exc.strerror or exc}"
    if why:
        _site_problems[directory] = (
            f"site jobs directory {directory} left out: {why} (make it root's, chmod go-w: "
            "root never imports code another user can change)"
        )
        return
    _site_problems.pop(directory, None)
    search.append(directory)


def _import(module: str) -> ModuleType:
    if not _MODULE.match(module):
        raise ConfigError(f"{module!r} is not a module path (e.g. jobs.wp_backup)")
    _add_search_path()
    package = default_package()
    if module != package and module.startswith(package + "."):
        _join_site_dir(_import(package))
    try:
        found = importlib.import_module(module)
        if module == package:
            _join_site_dir(found)
        return found
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            hint = site_dir_problem()
            raise ConfigError(
                f"no module named {module!r} (check the name and JOBRUNNER_PATH)" + (f"; {hint}" if hint else "")
            ) from None
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


def closest(word: str, names: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the name nearest ``word`` (difflib), or ``""``."""
    import difflib

    match = difflib.get_close_matches(word, sorted(set(names)), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _in_module(module: str, name: str) -> Job | None:
    try:
        mod = _import(module)
    except ConfigError:
        return None
    for candidate in jobs_in(mod):
        if name in (candidate.name, candidate.unit):
            return candidate
    return None


def load_job(ref: str) -> Job:
    """Import ``MODULE[:NAME]`` and return its job; without NAME the module must hold exactly one.

    A bare name (``site_backup``, ``wp-backup``) is first a job of the default package, by name
    or unit name, then a top-level module (the older form); neither: one line with the
    nearest job name."""
    if ":" not in ref and "." not in ref and ref.replace("-", "_").isidentifier():
        package = default_package()
        named = _in_module(f"{package}.{ref.replace('-', '_')}", ref)  # one import: its module's name
        if named is not None:
            return named
        if ref.isidentifier():  # the older form: a top-level module on the path
            try:
                return _load_module_job(ref, "")
            except ConfigError as exc:
                if not str(exc).startswith("no module named"):
                    raise
        jobs, broken = discover_report(package)
        for candidate in jobs:
            if ref in (candidate.name, candidate.unit):
                return candidate
        hint = closest(ref, [j.name for j in jobs] + [j.unit for j in jobs])
        more = "".join(f"; {b.module}: {b.error}" for b in broken[:1])
        raise ConfigError(f"no job {ref!r} in package {package!r}{hint} (jobrunner list shows them){more}")
    module, _, name = ref.partition(":")
    return _load_module_job(module, name)


def _load_module_job(module: str, name: str) -> Job:
    mod = _import(module)
    found = jobs_in(mod)
    if name:
        for candidate in found:
            if candidate.name == name:
                return candidate
        have = ", ".join(j.name for j in found) or "none"
        hint = closest(name, [j.name for j in found])
        raise ConfigError(f"module {module!r} has no job {name!r}{hint} (jobs: {have})")
    if not found:
        raise ConfigError(f"module {module!r} declares no @job")
    if len(found) > 1:
        names = ", ".join(j.name for j in found)
        raise ConfigError(f"module {module!r} declares {len(found)} jobs ({names}): name one as {module}:NAME")
    return found[0]


def default_package() -> str:
    """The package of jobs when none is named: ``$JOBRUNNER_PACKAGE``, else ``jobs``."""
    return os.environ.get(PACKAGE_ENV, "").strip() or DEFAULT_PACKAGE


class Broken(NamedTuple):
    """A module of the package that gave no jobs: an import error or a name already taken."""

    module: str
    error: str


def discover_report(package: str | None = None) -> tuple[list[Job], list[Broken]]:
    """Every job of ``package`` (as ``discover``), and the modules that are broken: a module
    that fails to import, or whose job takes a unit name an earlier module has, is left out
    and named, so the other jobs are still listed and judged. The package itself failing to
    import is still a ``ConfigError``."""
    import pkgutil

    if package is None:
        package = default_package()
    pkg = _import(package)
    broken: list[Broken] = []
    problem = site_dir_problem() if package == default_package() else None
    if problem:
        broken.append(Broken(site_jobs_dir() or "", problem))
    jobs: list[Job] = jobs_in(pkg)
    seen: dict[str, Job] = {j.unit: j for j in jobs}
    for info in sorted(pkgutil.iter_modules(getattr(pkg, "__path__", [])), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        name = f"{package}.{info.name}"
        try:
            found = jobs_in(_import(name))
        except ConfigError as exc:
            broken.append(Broken(name, str(exc)))
            continue
        clash = [(seen[j.unit], j) for j in found if j.unit in seen and seen[j.unit] is not j]
        if clash:
            other, job = clash[0]
            broken.append(Broken(name, f"jobs {other.ref} and {job.ref} both use the unit name {job.unit!r}"))
            continue
        for job in found:
            seen[job.unit] = job
    return sorted(seen.values(), key=lambda j: j.name), broken


def discover(package: str | None = None) -> list[Job]:
    """Every job in every module of ``package`` (default: ``default_package()``), not
    recursive, sorted by name; a broken module is a ``ConfigError`` (``discover_report``
    names it and keeps the others)."""
    jobs, broken = discover_report(package)
    real = [b for b in broken if b.module != site_jobs_dir()]
    if real:
        raise ConfigError(f"{real[0].module}: {real[0].error}" if "jobs " in real[0].error else real[0].error)
    return jobs
