"""The benchmark's results as Markdown (``bench.py --report FILE``, docs/benchmarks-results.md):
what ran, then one table per measurement, the issue's targets, and the latency plots."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import cpu_rows

# the hot-path targets (issue 13, item 2): extauthz (session cache on) against the no-op Check
TARGET_CPU_RATIO = 1.15  # CPU per Check in the authz server, at most this × the no-op's
TARGET_RPS_RATIO = 0.85  # throughput, at least this × the no-op's
TARGET_ADDED_RATIO = 1.15  # one-connection p50 added over Envoy alone, at most this × the no-op's


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; every column but the first right-aligned."""
    align = ["---", *["---:"] * (len(head) - 1)]
    lines = [head, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _pct(percentiles: dict[Any, float], p: float) -> float | None:
    return percentiles.get(p, percentiles.get(str(p)))


def throughput_section(report: dict[str, Any]) -> str:
    results = report.get("scenarios", [])
    if not results:
        return ""
    p = report["params"]
    rows = [(r["label"], f"{r['rps']:.0f}", _ms(r["p50_ms"]), _ms(r["p90_ms"]), _ms(r["p99_ms"]),
             str(r["non_2xx"]), str(r["requests"])) for r in results]  # fmt: skip
    return (
        f"## Throughput (closed loop: wrk -t{p['threads']} -c{p['connections']} "
        f"-d{p['duration_s']}s)\n\n"
        + table(("scenario", "req/s", "p50 ms", "p90 ms", "p99 ms", "non-2xx", "requests"), rows)
        + "\n\nCPU per request in µs, per process (in parentheses: cores busy over the run; "
        "the authz server is the process Envoy called; other: the rest of the machine)\n\n"
        + table(("scenario", "Envoy", "authz server", "Redis", "wrk", "other", "Redis cmds/req"),
                cpu_rows(results))  # fmt: skip
    )


def targets_section(report: dict[str, Any]) -> str:
    thr = {r["scenario"]: r for r in report.get("scenarios", [])}
    one = {r["scenario"]: r for r in report.get("one_connection", [])}
    rows = []
    if "ext_authz" in thr and "ext_authz_noop" in thr:
        ours, noop = thr["ext_authz"], thr["ext_authz_noop"]
        cpu = ours["cpu_us_per_request"]["extauthz"] / max(
            noop["cpu_us_per_request"]["extauthz"], 1e-9)  # fmt: skip
        rows.append(("CPU per cached Check, × the no-op server's", f"{cpu:.2f}",
                     f"≤ {TARGET_CPU_RATIO}", "met" if cpu <= TARGET_CPU_RATIO else "not met"))
        rps = ours["rps"] / max(noop["rps"], 1e-9)
        rows.append(("throughput, × the no-op server's", f"{rps:.2f}", f"≥ {TARGET_RPS_RATIO}",
                     "met" if rps >= TARGET_RPS_RATIO else "not met"))  # fmt: skip
    if all(k in one and "added_ms" in one[k] for k in ("ext_authz", "ext_authz_noop")):
        ours_added = _pct(one["ext_authz"]["added_ms"], 50.0) or 0.0
        noop_added = _pct(one["ext_authz_noop"]["added_ms"], 50.0) or 0.0
        ratio = ours_added / noop_added if noop_added > 0 else float("inf")
        rows.append(("one-connection p50 added over Envoy alone, × the no-op's",
                     f"{ratio:.2f} ({ours_added:.3f} vs {noop_added:.3f} ms)",
                     f"≤ {TARGET_ADDED_RATIO}",
                     "met" if ratio <= TARGET_ADDED_RATIO else "not met"))  # fmt: skip
    if not rows:
        return ""
    return ("## Targets (issue 13, item 2: extauthz with its session cache against the no-op "
            "Check, same run)\n\n" + table(("figure", "measured", "target", ""), rows))  # fmt: skip


def one_connection_section(report: dict[str, Any]) -> str:
    results = report.get("one_connection", [])
    if not results:
        return ""
    rows = []
    for r in results:
        pc, added = r["percentiles_ms"], r.get("added_ms", {})
        rows.append((r["label"], *(_ms(_pct(pc, p)) for p in (50.0, 90.0, 99.0, 99.9, 100.0)),
                     _ms(_pct(added, 50.0)), _ms(_pct(added, 99.0)), str(r["requests"])))
    return (
        f"## One connection, one request at a time (wrk -c1, {report['params']['latency_s']} s "
        "per scenario)\n\nLatency in ms; *added*: minus Envoy alone (no auth) at the same "
        "percentile.\n\n"
        + table(("scenario", "p50", "p90", "p99", "p99.9", "max", "added p50", "added p99",
                 "requests"), rows)  # fmt: skip
    )


def open_loop_section(report: dict[str, Any]) -> str:
    ol = report.get("open_loop")
    if not ol:
        return ""
    rows = []
    for r in ol["runs"]:
        pc = r["percentiles_ms"]
        rows.append((r["label"], f"{r['rate']:.0f}", f"{r['achieved_rps']:.0f}",
                     *(_ms(_pct(pc, p)) for p in (50.0, 90.0, 99.0, 99.9, 100.0)),
                     _ms(r["sender_lag_max_ms"]), str(r["non_2xx"])))  # fmt: skip
    skipped = "".join(f"\n* not run: {s['label']}: {s['reason']}" for s in ol.get("skipped", []))
    return (
        f"## Open loop at a fixed offered rate ({ol['rate']:.0f} req/s = {ol['fraction']:.0%} of "
        f"the lower of the no-op server's and extauthz's measured peaks, {ol['duration_s']:g} s "
        "per scenario)\n\n"
        "h2load sends on a schedule whatever the answers do; latency in ms from each request's "
        "intended send time (coordinated omission corrected); *sender lag*: how far h2load "
        "itself fell behind its schedule (counted into the latencies).\n\n"
        + table(("scenario", "offered/s", "achieved/s", "p50", "p90", "p99", "p99.9", "max",
                 "sender lag", "non-2xx"), rows)  # fmt: skip
        + ("\n" + skipped if skipped else "")
    )


def scaling_section(report: dict[str, Any]) -> str:
    sc = report.get("scaling")
    if not sc:
        return ""
    rows = []
    for r in sc["runs"]:
        cpu = r["cpu_us_per_request"]
        rows.append((str(r["workers"]), f"{r['rps']:.0f}", _ms(r["p50_ms"]), _ms(r["p99_ms"]),
                     f"{cpu['envoy']:.0f}", f"{cpu['extauthz']:.0f}",
                     f"{r['cpu_cores']['extauthz']:.2f}", f"{r['speedup']:.2f}",
                     " / ".join(f"{v:.1f}" for v in r.get("worker_cpu_s", {}).values())))
    return (
        f"## Scaling with server.workers (extauthz, session cache on; wrk -c{sc['connections']} "
        f"-d{sc['duration_s']}s; Envoy --concurrency {sc['envoy_concurrency']})\n\n"
        + table(("workers", "req/s", "p50 ms", "p99 ms", "Envoy µs/req", "extauthz µs/req",
                 "extauthz cores", "× 1 worker", "CPU s per worker"), rows)  # fmt: skip
    )


def memory_section(report: dict[str, Any]) -> str:
    mem = report.get("memory")
    if not mem:
        return ""
    rows = [(str(p["pid"]), p["role"], _ms(p["rss_before_mib"]), _ms(p["rss_after_mib"]),
             _ms(p["hwm_mib"])) for p in mem["processes"]]  # fmt: skip
    verdict = "met" if mem["target_met"] else "NOT met"
    return (
        f"## Memory after {mem['checks']:,} Checks ({mem['rps']:.0f} Checks/s through Envoy)\n\n"
        + table(("pid", "role", "RSS before MiB", "RSS after MiB", "peak (VmHWM) MiB"), rows)
        + f"\n\nLargest worker: {mem['max_worker_rss_mib']:.1f} MiB; target ≤ "
        f"{mem['target_mib_per_worker']:g} MiB per worker after 1,000,000 Checks: {verdict}"
        + ("" if mem["checks"] >= 1_000_000 else " (at this count; run "
           "`--checks-for-memory 1000000` for the target's)")  # fmt: skip
    )


def soak_section(report: dict[str, Any]) -> str:
    soak = report.get("soak")
    if not soak:
        return ""
    rows = []
    for i, w in enumerate(soak["windows"]):
        pc = w["percentiles_ms"]
        rss = " / ".join(f"{v:.1f}" for v in w["rss_mib"].values() if v is not None)
        rows.append((str(i + 1), f"{w['achieved_rps']:.0f}",
                     *(_ms(_pct(pc, p)) for p in (50.0, 99.0, 99.9, 100.0)),
                     str(w["non_2xx"] + w["socket_errors"]), rss))  # fmt: skip
    b = soak["bounds"]
    verdict = "passed" if not soak["problems"] else "FAILED: " + "; ".join(soak["problems"])
    return (
        f"## Soak: {soak['minutes']:g} min at {soak['rate']:.0f} req/s (of a measured peak of "
        f"{soak['peak_rps']:.0f}), {soak['window_s']:g} s windows\n\n"
        + table(("window", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors",
                 "extauthz RSS MiB"), rows)  # fmt: skip
        + f"\n\nBounds: RSS growth ≤ {b['rss_growth_mib']:g} MiB per process (first to last "
        f"window); last p99 ≤ {b['p99_factor']:g} × first + {b['p99_slack_ms']:g} ms. {verdict}"
    )


# the session store's targets (issue 13, item 3)
TARGET_BYTES_PER_SESSION = 400
TARGET_CREATES_PER_SECOND = 5000


def store_section(report: dict[str, Any]) -> str:
    store = report.get("store_bench")
    if not store:
        return ""
    title = "## Session store (benchmarks/store_bench.py)\n\n"
    if "figures" not in store:
        return title + str(store.get("note", ""))
    f = store["figures"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "not met"

    rows = [
        ("Redis bytes per session (`INFO memory` growth / sessions)",
         f"{f.get('bytes_per_session', float('nan')):g}", f"≤ {TARGET_BYTES_PER_SESSION}",
         verdict(f.get("bytes_per_session", 1e9) <= TARGET_BYTES_PER_SESSION)),
        ("keys per session", f"{f.get('keys_per_session', float('nan')):g}", "", ""),
        ("session creations per second, one process",
         f"{f.get('creates_per_second', float('nan')):g}", "", ""),
        (f"session creations per second, one node ({f.get('processes', '?')} processes at once)",
         f"{f.get('node_creates_per_second', float('nan')):g}", f"≥ {TARGET_CREATES_PER_SECOND}",
         verdict(f.get("node_creates_per_second", 0) >= TARGET_CREATES_PER_SECOND)),
        ("CPU per creation, Python / Redis (µs)",
         f"{f.get('python_cpu_us_per_create', '?')} / {f.get('redis_cpu_us_per_create', '?')}",
         "", ""),
    ]  # fmt: skip
    return (title + f"{f.get('sessions', '?')} sessions created through the real code "
            f"({f.get('concurrency', '?')} at once), Redis {f.get('redis_version', '?')}\n\n"
            + table(("figure", "measured", "target", ""), rows))  # fmt: skip


def plots_section(report: dict[str, Any], report_path: Path) -> str:
    plots = report.get("plots", [])
    if not plots:
        return ""
    base = report_path.resolve().parent
    links = [f"![{Path(p).stem}]({os.path.relpath(Path(p).resolve(), base)})" for p in plots]
    return "## Latency distributions\n\n" + "\n\n".join(links)


def render_markdown(report: dict[str, Any], report_path: Path) -> str:
    m, src = report["machine"], report["extauthz"]
    commit = src.get("commit", "")[:12] + (" + uncommitted changes in extauthz/"
                                           if src.get("uncommitted_changes") else "")  # fmt: skip
    wrk = report.get("wrk", "").split(" [")[0].replace("debian/", "wrk ")
    redis = report.get("redis", "").split(" sha=")[0]
    head = (
        "# Benchmark results\n\n"
        "<!-- written by benchmarks/bench.py --report (make bench); edit docs/benchmarks.md "
        "instead -->\n\n"
        f"**{report['date']}**, extauthz {src['version']} at `{commit or 'unknown'}`, Envoy "
        f"{report['envoy']} (`--concurrency {report['envoy_concurrency']}`), Python "
        f"{m['python']}, {wrk}, {report.get('h2load', '')}, {redis}.  \n"
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), Linux {m['kernel']}, shared by every "
        f"process of the run; load average before the run: {report.get('loadavg', '?')}.  \n"
        f"Command: `{report['command']}`"
    )
    sections = [head, targets_section(report), throughput_section(report),
                one_connection_section(report), open_loop_section(report),
                scaling_section(report), memory_section(report), soak_section(report),
                store_section(report),
                plots_section(report, report_path)]  # fmt: skip
    problems = report.get("problems", [])
    if problems:
        sections.append("## Problems (the run failed)\n\n" + "\n".join(f"* {p}" for p in problems))
    return "\n\n".join(s for s in sections if s) + "\n"
