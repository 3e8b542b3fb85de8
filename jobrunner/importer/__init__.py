"""``jobrunner import``: job modules from what admins already have.

- ``cron``: crontab(5) as Debian's cron reads it (Vixie cron 3.0 with Debian's patches): the
  system format (``/etc/crontab``, ``/etc/cron.d/*``, a user field after the five time
  fields) and a user's crontab; the five fields, ``@`` words, ``%`` as standard input,
  environment lines; and cron's own matcher (day of month *or* day of week when both are
  restricted, its DST catch-up), the reference ``--check`` compares systemd against.
- ``oncalendar``: a cron schedule as ``OnCalendar=`` lines (several when cron ORs the days).
- ``wrappers``: ``flock``, ``timeout``, ``nice``, ``ionice`` and ``>> FILE 2>&1`` around a
  cron command, recognised and turned into the job's settings.
- ``guards``: the systemd guard and ``test -x X &&`` in front of a command, background
  children, a package's native timers and the unit search path (names never taken).
- ``units``: existing ``.service`` + ``.timer`` pairs read into the same job specs.
- ``emit``: a job spec as a module a person could have written (``from jobrunner import
  job``), the original line or unit lines kept as comments.
- ``services``: an ``@reboot`` line that starts a daemon (``nohup X &``) as a plain
  ``Type=simple`` service instead of a job, when that provably runs it as cron did.
- ``check``: cron's firings against the emitted ``OnCalendar=`` lines (computed by
  ``systemd-analyze calendar``), side by side.

Nothing here is imported by ``jobrunner run``: only ``jobrunner import`` loads it.
"""
