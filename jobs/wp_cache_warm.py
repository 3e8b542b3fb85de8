"""Warm the page cache during peak hours: fetch every URL of the site's sitemap, every 10 min.

Settings, from the environment or ``/etc/default/wp-cache-warm``:

- ``CACHE_WARM_URL``: the site's home URL (``https://example.com/``), always fetched
- ``SITEMAP_URL``: default ``<CACHE_WARM_URL>/wp-sitemap.xml`` (WordPress core's sitemap
  index); nested sitemaps (``<sitemapindex>``) are followed. ``none`` warms the home URL only.
  At least one of the two must be set.
- ``CACHE_WARM_CONCURRENCY``: parallel requests (default 4, at most 32)
- ``CACHE_WARM_TIMEOUT``: per request, connect to last byte (default 10 seconds; a number of
  seconds or a span such as ``1.5``, ``30s``)
- ``CACHE_WARM_BUDGET``: for the whole run (default 300 seconds, well inside the 10 min
  period and the 9 min job timeout); URLs not started when it runs out are skipped and counted
- ``CACHE_WARM_MAX_URLS``: stop collecting URLs after this many (default 2000)
- ``CACHE_WARM_ERROR_PERCENT``: fail the run when more than this share of the requests made
  failed (default 50). Below it, errors are logged and the run succeeds: a few broken pages
  must not page anyone every 10 minutes, a site that is down must.

Only URLs on the host(s) of ``CACHE_WARM_URL`` and ``SITEMAP_URL`` are fetched; others in the
sitemap are skipped (``skipped_offsite``). Each failed request logs ``cache_warm.error`` (the
first 20); the run ends with ``cache_warm.summary``: urls, ok, errors, skipped, p50/p95/max
latency in ms, duration, whether the budget ran out. Standard library only (urllib, threads).
"""

from __future__ import annotations

import math
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from jobrunner import ConfigError, JobContext, job
from jobrunner.settings import env_int, env_percent, env_span

USER_AGENT = "jobrunner-cache-warm/1 (+https://github.com/)"
MAX_SITEMAP_BYTES = 10 * 1024 * 1024
MAX_SITEMAPS = 200
MAX_ERROR_EVENTS = 20
_CHUNK = 64 * 1024


class BudgetExhausted(TimeoutError):
    pass


@dataclass
class Fetched:
    url: str
    ok: bool
    seconds: float
    status: int | None = None
    error: str = ""
    skipped: bool = False


def fetch(url: str, timeout: float, deadline: float, limit: int | None = None) -> tuple[int, bytes]:
    """GET ``url``; the whole request (connect to last byte) ends by ``deadline`` or raises."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise BudgetExhausted("budget exhausted before the request")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=min(timeout, left)) as response:
        chunks, size = [], 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not complete after {timeout:g}s")
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if limit is not None:
                if size > limit:
                    raise ValueError(f"larger than {limit} bytes")
                chunks.append(chunk)
        return response.status, b"".join(chunks)


def _locs(body: bytes) -> tuple[str, list[str]]:
    """(``sitemapindex`` | ``urlset``, the ``<loc>`` values) of a sitemap document."""
    root = ET.fromstring(body)
    kind = root.tag.rsplit("}", 1)[-1]
    locs = [el.text.strip() for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "loc" and el.text]
    return kind, locs


def _describe(exc: BaseException) -> tuple[int | None, str]:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code, f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) and "timed out" in text:
        text = "timed out"
    return None, f"{type(exc).__name__}: {text}"


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (``None`` for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@job(
    schedule="08..20:0/10",
    persistent=False,
    accuracy="30s",
    lock=True,
    timeout="9m",
    user="www-data",
    network=True,
    env_files=["-/etc/default/wp-cache-warm"],
    instances="optional",  # per site too: the group "wp" (docs/sites.md)
    instance_group="wp",
)
def wp_cache_warm(ctx: JobContext) -> None:
    """Fetch the home page and every sitemap URL, a few at a time, within a time budget."""
    env = ctx.env
    home = env.get("CACHE_WARM_URL", "").strip()
    sitemap = env.get("SITEMAP_URL", "").strip()
    if sitemap.lower() in ("none", "off"):
        sitemap = ""
    elif not sitemap and home:
        sitemap = urljoin(home.rstrip("/") + "/", "wp-sitemap.xml")
    if not home and not sitemap:
        raise ConfigError("set CACHE_WARM_URL (the home URL) and/or SITEMAP_URL")
    for name, url in (("CACHE_WARM_URL", home), ("SITEMAP_URL", sitemap)):
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(f"{name}={url!r}: must be an http:// or https:// URL")
    workers = env_int(env, "CACHE_WARM_CONCURRENCY", 4, min=1, max=32)
    timeout = env_span(env, "CACHE_WARM_TIMEOUT", 10, min=0.1, max=600)
    budget = env_span(env, "CACHE_WARM_BUDGET", 300, min=1, max=86400)
    max_urls = env_int(env, "CACHE_WARM_MAX_URLS", 2000, min=1, max=1_000_000)
    error_percent = env_percent(env, "CACHE_WARM_ERROR_PERCENT", 50)
    left = ctx.remaining()
    if left is not None:  # never plan past the job's own deadline
        budget = min(budget, max(1.0, left - 5))
    started = time.monotonic()
    deadline = started + budget
    hosts = {urlsplit(u).hostname for u in (home, sitemap) if u}
    ctx.log.info(
        "cache_warm.planned",
        home=home or None,
        sitemap=sitemap or None,
        concurrency=workers,
        timeout_s=timeout,
        budget_s=budget,
    )
    if ctx.dry_run:
        return

    results: list[Fetched] = []
    urls: list[str] = [home] if home else []
    offsite = 0
    queue = [sitemap] if sitemap else []
    seen_maps: set[str] = set()
    while queue and len(urls) < max_urls and len(seen_maps) < MAX_SITEMAPS:
        current = queue.pop(0)
        if current in seen_maps:
            continue
        seen_maps.add(current)
        t0 = time.monotonic()
        try:
            status, body = fetch(current, timeout, min(deadline, t0 + timeout), limit=MAX_SITEMAP_BYTES)
            kind, locs = _locs(body)
        except BudgetExhausted:
            break
        except (OSError, ValueError, ET.ParseError) as exc:
            code, error = _describe(exc)
            results.append(Fetched(current, False, time.monotonic() - t0, code, error))
            ctx.log.warning("cache_warm.sitemap_error", url=current, error=error)
            continue
        results.append(Fetched(current, True, time.monotonic() - t0, status))
        for loc in locs:
            if urlsplit(loc).hostname not in hosts:
                offsite += 1
            elif kind == "sitemapindex":
                queue.append(loc)
            elif loc not in urls and len(urls) < max_urls:
                urls.append(loc)
        ctx.log.debug("cache_warm.sitemap", url=current, kind=kind, locs=len(locs))

    stop = threading.Event()

    def warm(url: str) -> Fetched:
        if stop.is_set() or time.monotonic() >= deadline:
            return Fetched(url, False, 0.0, skipped=True)
        t0 = time.monotonic()
        try:
            status, _ = fetch(url, timeout, min(deadline, t0 + timeout))
            return Fetched(url, True, time.monotonic() - t0, status)
        except BudgetExhausted:
            return Fetched(url, False, 0.0, skipped=True)
        except Exception as exc:
            code, error = _describe(exc)
            return Fetched(url, False, time.monotonic() - t0, code, error)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="warm")
    try:
        with ctx.progress("urls", total=len(urls), unit="URLs") as p:
            for fetched in pool.map(warm, urls):  # counted here, in order: one thread advances
                results.append(fetched)
                p.advance()
    finally:
        stop.set()  # on SIGTERM/timeout the queued URLs return at once as skipped
        pool.shutdown(wait=True, cancel_futures=True)

    done = [r for r in results if not r.skipped]
    failed = [r for r in done if not r.ok]
    for r in failed[:MAX_ERROR_EVENTS]:
        ctx.log.warning("cache_warm.error", url=r.url, error=r.error, status=r.status, ms=round(r.seconds * 1000))
    latencies = [r.seconds * 1000 for r in done if r.ok]
    skipped = len(results) - len(done)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v, 1)

    ctx.log.info(
        "cache_warm.summary",
        urls=len(urls),
        requests=len(done),
        ok=len(done) - len(failed),
        errors=len(failed),
        skipped=skipped,
        skipped_offsite=offsite,
        p50_ms=ms(percentile(latencies, 50)),
        p95_ms=ms(percentile(latencies, 95)),
        max_ms=ms(max(latencies, default=None)),
        duration_s=round(time.monotonic() - started, 3),
        budget_exhausted=skipped > 0,
        concurrency=workers,
    )
    if not done:
        raise RuntimeError("cache warm made no request: the budget ran out before the first one")
    share = len(failed) * 100 / len(done)
    if share > error_percent or len(failed) == len(done):
        raise RuntimeError(
            f"cache warm: {len(failed)} of {len(done)} requests failed ({share:.0f}% > "
            f"CACHE_WARM_ERROR_PERCENT={error_percent:g}); first: {failed[0].url}: {failed[0].error}"
        )
