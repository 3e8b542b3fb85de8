"""The sandbox of a job's service: three levels, each a superset of the one before.

``basic``
    What every production service should have and what breaks nothing a job legitimately
    does: the seed's ``NoNewPrivileges=``, ``PrivateTmp=``, plus kernel/clock/hostname
    protection, ``RestrictSUIDSGID=``, ``LockPersonality=``, ``RestrictRealtime=``,
    ``SystemCallArchitectures=native``.
``standard``
    The seed's file-system view (``ProtectSystem=strict``, ``ProtectHome=read-only``, only
    the declared ``write_paths`` writable), plus ``PrivateDevices=``,
    ``ProtectKernelTunables=``, ``ProtectControlGroups=``, ``ProtectProc=invisible``,
    ``RestrictNamespaces=``, ``RestrictAddressFamilies=`` (UNIX and IP only), ``UMask=0027``,
    the ``@system-service`` seccomp allow list (denied calls fail with ``EPERM``), and no
    capabilities at all for a non-root ``User=`` (it has none to use anyway).
``strict``
    Everything ``systemd-analyze security`` rewards that CPython and the usual job tools
    (wp-cli, mysqldump, rclone, tar, gzip) survive: the seccomp list also without
    ``@privileged``/``@resources``,
    ``MemoryDenyWriteExecute=`` (CPython has no JIT; PHP's opcache JIT is off for the CLI),
    ``ProcSubset=pid``, ``PrivateMounts=``, an empty capability bounding set (even for root),
    ``UMask=0077``, ``PrivateUsers=`` for a non-root ``User=``, ``ProtectHome=yes`` unless a
    declared path lives under a home directory, and the network policy below.

Network policy (``standard`` and ``strict``): every job may use ``AF_UNIX`` (journald,
sd_notify, MySQL's socket) and ``AF_INET``/``AF_INET6``. At ``strict`` a job declared
``network=False`` is fenced to loopback: ``IPAddressDeny=any`` + ``IPAddressAllow=localhost``
(MySQL/Redis on 127.0.0.1 still work; anything remote fails fast with ``EPERM``). Its
in-process notifications to remote services therefore fail; failures are still delivered by
``alert-failure@.service``, which has the network. Declare ``network=True`` for a job whose
successes/recoveries must notify, or that talks to anything off the machine.

Anything a job needs beyond its level (root's capabilities for ``systemctl restart``,
binding port 80, chown) comes from the job's ``systemd=`` overrides, applied after
these directives (see ``render.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["LEVELS", "THRESHOLDS", "hardening_directives", "under_home"]

LEVELS = ("basic", "standard", "strict")

#: ``systemd-analyze security`` exposure a rendered job unit must not exceed, by
#: (level, network). ``units verify`` uses these unless ``--threshold`` is given.
THRESHOLDS: dict[tuple[str, bool], float] = {
    ("strict", False): 1.5,
    ("strict", True): 2.0,
    ("standard", False): 4.0,
    ("standard", True): 4.0,
    ("basic", False): 8.0,
    ("basic", True): 8.0,
    ("alert", True): 2.5,
}

_HOMES = ("/home", "/root", "/run/user")

Directive = tuple[str, str]


def under_home(paths: Iterable[str]) -> bool:
    """True when one of ``paths`` (``-`` prefixes allowed) is inside a home directory tree."""
    for raw in paths:
        path = raw.lstrip("-+")
        if any(path == home or path.startswith(home + "/") for home in _HOMES):
            return True
    return False


def _basic() -> list[Directive]:
    return [
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictRealtime", "yes"),
        ("LockPersonality", "yes"),
        ("SystemCallArchitectures", "native"),
    ]


def hardening_directives(level: str, *, root: bool, network: bool, home_paths: bool) -> list[Directive]:
    """The ``[Service]`` sandbox directives for ``level``, in a stable order.

    ``root``: the service runs as root (no ``User=`` or ``User=root``); ``network``: the job
    declared ``network=True``; ``home_paths``: a declared path is under /home, /root or
    /run/user (``ProtectHome=`` is then ``read-only`` so the path stays reachable).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown hardening level {level!r} (use {', '.join(LEVELS)})")
    out = _basic()
    if level == "basic":
        return out
    strict = level == "strict"
    out += [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes" if strict and not home_paths else "read-only"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectProc", "invisible"),
        ("RestrictNamespaces", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("UMask", "0077" if strict else "0027"),
        ("SystemCallFilter", "@system-service"),
    ]
    if strict:
        out.append(("SystemCallFilter", "~@privileged @resources"))
    out.append(("SystemCallErrorNumber", "EPERM"))
    if strict or not root:
        out += [("CapabilityBoundingSet", ""), ("AmbientCapabilities", "")]
    if not strict:
        return out
    out += [
        ("ProcSubset", "pid"),
        ("PrivateMounts", "yes"),
        ("KeyringMode", "private"),
        ("MemoryDenyWriteExecute", "yes"),
    ]
    if not root:
        out.append(("PrivateUsers", "yes"))
    if not network:
        out += [("IPAddressDeny", "any"), ("IPAddressAllow", "localhost")]
    return out


def alert_directives() -> list[Directive]:
    """The sandbox of ``alert-failure@.service``: moderate, root, with the network.

    It runs as root to read every job's journal and state, so it keeps only the capabilities
    for that (read/override file permissions) and may reach remote notification services.
    """
    return _basic() + [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallFilter", "~@privileged @resources"),
        ("SystemCallErrorNumber", "EPERM"),
        ("CapabilityBoundingSet", "CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER"),
        ("UMask", "0077"),
    ]
