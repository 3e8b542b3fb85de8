"""media_sync, wp_cache_warm and certbot_renew in their shipped, hardened units under real systemd.

The servers (moto's S3, nginx + php-fpm, pebble) run on the host on 127.0.0.1; the sandbox
(tests/systemd) shares the host's network, so a unit inside reaches them as it would reach a
bucket, its own site or Let's Encrypt. Each unit is installed with the project's own
``units render`` / ``units install`` and started with ``systemctl start``: its User=, strict
sandbox, dropped capabilities and system-call filter are all in force.
"""

from __future__ import annotations

import json
import shlex

import pytest

from .conftest import S3, AcmeServer, Web, certonly_argv, free_port

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

JOBS = ("media_sync", "wp_cache_warm", "certbot_renew")
PROBE = "jr-web-probe.service"  # stands in for nginx: records each reload
RELOADS = "/run/jr-web-probe.reloads"
DOMAIN = "blog.example.test"
LIVE = f"/etc/letsencrypt/live/{DOMAIN}"


@pytest.fixture(scope="module")
def units(installed_sandbox):
    sb = installed_sandbox
    sb.run(["jobrunner", "units", "render", "--out", "/root/service-units", *JOBS])
    sb.run(["jobrunner", "units", "install", "--dir", "/root/service-units"], timeout=120)
    for job in JOBS:
        unit = job.replace("_", "-")
        sb.systemctl("stop", f"{unit}.timer")  # none may fire amid other tests
        sb.pin(f"{unit}.service", reload=False)
    sb.write_unit(
        PROBE, f"[Service]\nExecStart=/bin/sleep infinity\nExecReload=/bin/sh -c 'echo reloaded >> {RELOADS}'\n"
    )
    sb.systemctl("start", PROBE)
    yield sb
    sb.systemctl("stop", PROBE, check=False)


def _env_file(sb, path: str, values: dict[str, str]) -> None:
    """An EnvironmentFile= (mode 0600, root), its values quoted as systemd reads them."""
    text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())
    sb.run(["sh", "-c", f"umask 077 && cat > {path}"], input=text)


def _summary(events: list[dict]) -> str:
    return json.dumps(
        [{k: v for k, v in e.items() if k not in ("ts", "run_id", "job", "host", "pid")} for e in events[-12:]],
        indent=1,
    )


def test_media_sync_unit_uploads_as_www_data(units, moto: S3):
    """The unit (User=www-data, PrivateUsers=, ProtectHome=) copies the uploads to the bucket
    with rclone configured from its EnvironmentFile=; the S3 secret is not in the journal."""
    sb = units
    site = "/var/www/media-e2e"
    month = f"{site}/wp-content/uploads/2026/11"
    sb.run(
        f"mkdir -p {month} && head -c 6000 /dev/urandom > {month}/cat.jpg && "
        f"printf '%%PDF-1.4' > {month}/doc.pdf && chown -R www-data:www-data {site}"
    )
    _env_file(
        sb,
        "/etc/default/media-sync",
        {"WP_PATH": site, "MEDIA_SYNC_DEST": f"{moto.remote}:media-bucket/uploads", **moto.rclone_env()},
    )
    try:
        st = sb.start_oneshot("media-sync.service")
        events = sb.job_events(st["InvocationID"], "media-sync.service")
        assert st["Result"] == "success", _summary(events)
        assert moto.ls("media-bucket/uploads") == {"2026/11/cat.jpg": 6000, "2026/11/doc.pdf": 8}
        synced = [e for e in events if e["event"] == "media.synced"]
        assert (synced[0]["transfers"], synced[0]["errors"]) == (2, 0)
        assert [e["user"] for e in events if e["event"] == "job.started"] == ["www-data"]

        again = sb.start_oneshot("media-sync.service")
        assert again["Result"] == "success"
        synced = [e for e in sb.job_events(again["InvocationID"], "media-sync.service") if e["event"] == "media.synced"]
        assert (synced[0]["transfers"], synced[0]["checks"]) == (0, 2)
        journal = sb.run(["journalctl", "-u", "media-sync.service", "--no-pager", "-o", "cat"]).stdout
        assert moto.secret_key not in journal
    finally:
        sb.run(f"rm -rf {site} /etc/default/media-sync", check=False)


def test_wp_cache_warm_unit_fetches_the_sitemap_as_www_data(units, web: Web):
    """The unit follows the sitemap index and warms every page; nginx's log shows each request."""
    sb = units
    _env_file(sb, "/etc/default/wp-cache-warm", {"CACHE_WARM_URL": web.base + "/", "CACHE_WARM_CONCURRENCY": "4"})
    try:
        st = sb.start_oneshot("wp-cache-warm.service")
        events = sb.job_events(st["InvocationID"], "wp-cache-warm.service")
        assert st["Result"] == "success", _summary(events)
    finally:
        sb.run(["rm", "-f", "/etc/default/wp-cache-warm"], check=False)
    expected = {"/", *(f"/page.php?page={i}" for i in range(1, 7)), *(f"/page.php?p={i}" for i in range(1, 13))}
    assert sorted(p for p in web.paths() if "sitemap" not in p) == sorted(expected)
    summary = [e for e in events if e["event"] == "cache_warm.summary"][0]
    assert (summary["urls"], summary["ok"], summary["errors"]) == (19, 22, 0)
    assert [e["user"] for e in events if e["event"] == "job.started"] == ["www-data"]


def _serial(sb) -> str:
    return sb.run(["openssl", "x509", "-noout", "-serial", "-in", f"{LIVE}/cert.pem"]).stdout.strip()


def _reloads(sb) -> int:
    return len(sb.run(["sh", "-c", f"cat {RELOADS} 2>/dev/null || true"]).stdout.splitlines())


def test_certbot_renew_unit_renews_keeps_key_group_and_reloads_once(units, acme_server: AcmeServer):
    """certbot in its unit (root, strict sandbox, only CAP_CHOWN and CAP_NET_BIND_SERVICE, @chown
    allowed back) against a local ACME CA, with Debian's default /etc, /var/lib and /var/log
    letsencrypt dirs: a certificate not due is left alone and nothing reloads; a forced renewal
    gets a new certificate, gives the new key the old key's group, and reloads exactly once."""
    sb = units
    ca = "/etc/jobrunner/acme-test-ca.pem"
    sb.run(["sh", "-c", f"mkdir -p /etc/jobrunner && cat > {ca}"], input=acme_server.ca.read_text())
    obtain = sb.run(
        ["env", f"REQUESTS_CA_BUNDLE={ca}", *certonly_argv(acme_server.dir_url, free_port(), DOMAIN)],
        check=False,
        timeout=120,
    )
    assert obtain.returncode == 0, (
        obtain.stdout + obtain.stderr + sb.run("tail -n 60 /var/log/letsencrypt/letsencrypt.log", check=False).stdout
    )
    # the key readable by a service's group (the case where certbot must chown the new key)
    sb.run(f"chgrp www-data {LIVE}/privkey.pem && chmod 0640 {LIVE}/privkey.pem")
    settings = {"REQUESTS_CA_BUNDLE": ca, "RELOAD_COMMAND": f"systemctl reload {PROBE}"}
    try:
        before = _serial(sb)
        _env_file(sb, "/etc/default/certbot-renew", settings)
        st = sb.start_oneshot("certbot-renew.service")
        events = sb.job_events(st["InvocationID"], "certbot-renew.service")
        assert st["Result"] == "success", _summary(events)
        assert "certbot.nothing_renewed" in [e["event"] for e in events]
        assert (_serial(sb), _reloads(sb)) == (before, 0)

        _env_file(sb, "/etc/default/certbot-renew", {**settings, "CERTBOT_EXTRA_ARGS": "--force-renewal"})
        st = sb.start_oneshot("certbot-renew.service")
        events = sb.job_events(st["InvocationID"], "certbot-renew.service")
        assert st["Result"] == "success", _summary(events)
        renewed = [e for e in events if e["event"] == "certbot.renewed"]
        assert renewed and renewed[0]["lineages"] == [LIVE]
        assert _serial(sb) != before
        assert sb.run(["stat", "-L", "-c", "%G %a", f"{LIVE}/privkey.pem"]).stdout.split() == ["www-data", "640"]
        assert _reloads(sb) == 1
    finally:
        sb.run(
            f"rm -rf /etc/letsencrypt /var/lib/letsencrypt /var/log/letsencrypt {ca} /etc/default/certbot-renew",
            check=False,
        )
