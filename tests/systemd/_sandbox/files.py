"""Files as the container sees them: paths resolved inside R (symlinks never reach the host),
written into the overlay directly or, on the container's own mounts (/tmp, /run, ...), via nsenter."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from .base import SandboxBase
from .common import SandboxError
from .host import _makedirs
from .mounts import _mount_points


class Files(SandboxBase):
    """Mixed into Sandbox (core.py)."""

    def _inside_mounts(self) -> list[str]:
        if not self.booted:
            return ["/"]
        return _mount_points(f"/proc/{self.pid1}/mountinfo")

    def resolve(self, path: str) -> str:
        """PATH with symlinks resolved as the container sees them (absolute links stay in R)."""
        assert self.root
        if not path.startswith("/"):
            raise ValueError(f"absolute path required: {path!r}")
        todo = [p for p in path.split("/") if p]
        cur = "/"
        hops = 0
        while todo:
            comp = todo.pop(0)
            if comp == ".":
                continue
            if comp == "..":
                cur = posixpath.dirname(cur) or "/"
                continue
            cand = posixpath.join(cur, comp)
            host = self.root + cand
            if os.path.islink(host):
                hops += 1
                if hops > 40:
                    raise SandboxError(f"too many symlinks resolving {path}")
                target = os.readlink(host)
                if target.startswith("/"):
                    cur = "/"
                todo = [p for p in target.split("/") if p] + todo
                continue
            cur = cand
        return cur

    def _on_overlay(self, resolved: str) -> bool:
        """True when RESOLVED (container path) lives on the overlay root, not on a mount of nspawn's."""
        best = "/"
        for mp in self._inside_mounts():
            if (resolved == mp or resolved.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best = mp
        return best == "/"

    def _host(self, resolved: str) -> str:
        """The host path of RESOLVED, a container path on the overlay root (see resolve())."""
        assert self.root
        return self.root + resolved

    def host_path(self, path: str) -> str:
        """The host path of container path PATH (must be on the overlay root)."""
        resolved = self.resolve(path)
        if not self._on_overlay(resolved):
            raise SandboxError(f"{path} is on a mount private to the container; use run()")
        return self._host(resolved)

    def write_file(self, path: str, text: str | bytes, mode: int = 0o644) -> None:
        """Create/replace PATH inside the sandbox (parents created).  Paths on the overlay are
        written into R directly; paths on the container's own mounts (/tmp, /run, /dev/shm …)
        are written through nsenter."""
        data = text.encode() if isinstance(text, str) else text
        resolved = self.resolve(path)
        if self._on_overlay(resolved):
            host = self._host(resolved)
            _makedirs(os.path.dirname(host))
            tmp = f"{host}.jrtmp{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            try:
                os.write(fd, data)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.replace(tmp, host)
        else:
            self.run(
                [
                    "sh",
                    "-c",
                    'mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" "$1"',
                    "sh",
                    resolved,
                    format(mode, "o"),
                ],
                input=data,
                text=False,
            )

    def read_file(self, path: str) -> str:
        resolved = self.resolve(path)
        if self._on_overlay(resolved):
            return Path(self._host(resolved)).read_text()
        return self.run(["cat", "--", resolved]).stdout

    def exists(self, path: str) -> bool:
        resolved = self.resolve(path)
        if self._on_overlay(resolved):
            return os.path.lexists(self._host(resolved))
        return self.run(["test", "-e", resolved], check=False).returncode == 0
