"""wp_cache_warm against nginx + php-fpm serving a WordPress core-style sitemap."""

from __future__ import annotations

from jobs.wp_cache_warm import percentile

from .conftest import Web, _index, _urlset


def _max_overlap(requests: list[dict]) -> int:
    """Most requests in flight at once, from the access log's end times and durations."""
    edges = []
    for r in requests:
        edges += [(r["end"] - r["seconds"], 1), (r["end"], -1)]
    best = cur = 0
    for _, delta in sorted(edges, key=lambda e: (e[0], e[1])):
        cur += delta
        best = max(best, cur)
    return best


def test_warms_every_sitemap_url_with_bounded_concurrency(launcher, web: Web):
    """Index → nested sitemaps (static and PHP) → every URL fetched once; never more than 3 at a time."""
    run = launcher.run(
        "run", "jobs.wp_cache_warm", env=launcher.env(CACHE_WARM_URL=web.base + "/", CACHE_WARM_CONCURRENCY="3")
    )
    assert run.returncode == 0, run.stdout + run.stderr
    paths = web.paths()
    expected = {"/", *(f"/page.php?page={i}" for i in range(1, 7)), *(f"/page.php?p={i}" for i in range(1, 13))}
    fetched = [p for p in paths if "sitemap" not in p]
    assert sorted(fetched) == sorted(expected)  # each once: the home URL is also in the sitemap
    assert {"/wp-sitemap.xml", "/wp-sitemap-posts-post-1.php", "/wp-sitemap-pages-1.xml"} <= set(paths)
    pages = [r for r in web.requests() if r["path"].startswith("/page.php")]
    assert all(r["status"] == 200 for r in web.requests())
    assert 2 <= _max_overlap(pages) <= 3
    summary = run.event("cache_warm.summary")
    assert (summary["urls"], summary["errors"], summary["skipped"]) == (19, 0, 0)
    assert summary["ok"] == 22  # 19 pages + 3 sitemaps
    assert 200 <= summary["p50_ms"] <= summary["p95_ms"] <= summary["max_ms"]


def test_a_black_hole_times_out_and_counts_as_an_error(launcher, web: Web, blackhole: str):
    """One URL that never answers: it fails after CACHE_WARM_TIMEOUT, is logged, and the run still succeeds."""
    (web.root / "mixed.xml").write_text(_urlset([f"{web.base}/page.php?a=1", blackhole, f"{web.base}/page.php?a=2"]))
    run = launcher.run(
        "run", "jobs.wp_cache_warm", env=launcher.env(SITEMAP_URL=f"{web.base}/mixed.xml", CACHE_WARM_TIMEOUT="1.5")
    )
    assert run.returncode == 0, run.stdout + run.stderr
    error = run.event("cache_warm.error")
    assert error["url"] == blackhole and "timed out" in error["error"]
    assert 1400 <= error["ms"] <= 4000
    summary = run.event("cache_warm.summary")
    assert (summary["ok"], summary["errors"]) == (3, 1)
    assert run.event("job.finished")["duration_s"] < 10


def test_too_many_errors_fail_the_run(launcher, web: Web, blackhole: str):
    """Errors above CACHE_WARM_ERROR_PERCENT: exit 1 with the count and the first failing URL."""
    (web.root / "bad.xml").write_text(_urlset([f"{web.base}/missing.html", blackhole, f"{web.base}/page.php?b=1"]))
    run = launcher.run(
        "run",
        "jobs.wp_cache_warm",
        env=launcher.env(SITEMAP_URL=f"{web.base}/bad.xml", CACHE_WARM_TIMEOUT="1", CACHE_WARM_ERROR_PERCENT="25"),
    )
    assert run.returncode == 1
    message = run.event("job.failed")["exception"]["message"]
    assert "2 of 4 requests failed" in message and "HTTP 404" in message


def test_budget_bounds_the_whole_run(launcher, web: Web, blackhole: str):
    """Forty black-hole URLs, 2 workers, 10 s timeout, 2 s budget: done in about 2 s, the rest skipped."""
    (web.root / "slow.xml").write_text(_urlset([f"{blackhole}?n={i}" for i in range(40)]))
    (web.root / "index-slow.xml").write_text(_index([f"{web.base}/slow.xml"]))
    run = launcher.run(
        "run",
        "jobs.wp_cache_warm",
        env=launcher.env(
            SITEMAP_URL=f"{web.base}/index-slow.xml",
            CACHE_WARM_CONCURRENCY="2",
            CACHE_WARM_TIMEOUT="10",
            CACHE_WARM_BUDGET="2",
        ),
    )
    summary = run.event("cache_warm.summary")
    assert summary["budget_exhausted"] is True
    assert summary["errors"] == 2 and summary["skipped"] == 38
    assert summary["duration_s"] < 4
    # 2 sitemaps fetched + 2 black-hole timeouts: 50% failed, not above the default 50%
    assert summary["requests"] == 4 and run.returncode == 0


def test_offsite_urls_are_skipped_and_config_is_checked(launcher, web: Web):
    """A sitemap URL on another host is not fetched; no URL at all is a config error (78)."""
    (web.root / "off.xml").write_text(_urlset([f"{web.base}/page.php?c=1", "http://elsewhere.invalid/x"]))
    run = launcher.run("run", "jobs.wp_cache_warm", env=launcher.env(SITEMAP_URL=f"{web.base}/off.xml"))
    assert run.returncode == 0
    assert run.event("cache_warm.summary")["skipped_offsite"] == 1
    assert launcher.run("run", "jobs.wp_cache_warm", env=launcher.env()).returncode == 78
    assert launcher.run("run", "jobs.wp_cache_warm", env=launcher.env(CACHE_WARM_URL="ftp://x/")).returncode == 78


def test_percentile_nearest_rank():
    """p50/p95 are nearest-rank percentiles."""
    assert percentile([], 50) is None
    assert percentile([5, 1, 3, 2, 4], 50) == 3
    assert percentile(list(range(1, 101)), 95) == 95
