"""Summarise ``make loadtest`` runs: per kind of traffic, the rate held, latency and TTFT percentiles, errors.

    python deploy/loadtest/report.py OUT_DIR        # reads OUT_DIR/samples-*.json (one per run)

Prints a Markdown summary, writes ``summary.md`` and ``report.html`` (with links to Locust's
own reports) beside the samples, and exits 1 when a design threshold fails: p95 latency of
any kind at or above ``LOADTEST_P95_MS`` (3000), errors at or above ``LOADTEST_MAX_ERROR_PCT``
(1 %), or a kind held below ``LOADTEST_MIN_RATE_HELD`` (0.95) of its target rate.
Stdlib only: it runs with any Python 3.11.
"""

from __future__ import annotations

import html
import json
import math
import os
import sys
from pathlib import Path

P95_MS = float(os.environ.get("LOADTEST_P95_MS", "3000"))
MAX_ERROR_PCT = float(os.environ.get("LOADTEST_MAX_ERROR_PCT", "1"))
MIN_RATE_HELD = float(os.environ.get("LOADTEST_MIN_RATE_HELD", "0.95"))


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def summarise(run: dict) -> dict:
    duration = run["run_s"]
    kinds: dict[str, dict] = {}
    for rtype, name, elapsed, failed, _at in run["samples"]:
        row = kinds.setdefault(name, {"latency": [], "ttft": [], "ok": 0, "errors": 0})
        if rtype == "TTFT":
            row["ttft"].append(elapsed)
            continue
        row["latency"].append(elapsed)
        row["errors" if failed else "ok"] += 1
    target = run["rate"] * run["multiplier"]
    rows = []
    for name, row in sorted(kinds.items()):
        count = row["ok"] + row["errors"]
        mix_kind = name.split(" [")[0]
        share = run["mix"].get(mix_kind) if not name.endswith("[new]") else None
        rows.append(
            {
                "kind": name,
                "count": count,
                "rate": count / duration if duration else 0.0,
                "p50": pct(row["latency"], 50),
                "p95": pct(row["latency"], 95),
                "p99": pct(row["latency"], 99),
                "ttft_p50": pct(row["ttft"], 50),
                "ttft_p95": pct(row["ttft"], 95),
                "ttft_p99": pct(row["ttft"], 99),
                "errors": row["errors"],
                "error_pct": 100 * row["errors"] / count if count else 0.0,
                "mix_kind": mix_kind if share is not None else None,
            }
        )
    held = {}
    for kind, share in run["mix"].items():
        achieved = sum(r["rate"] for r in rows if r["mix_kind"] == kind)
        held[kind] = (achieved, target * share)
    uploads = next((r for r in rows if r["kind"] == "upload"), None)
    if uploads is not None:
        held["upload"] = (uploads["rate"], 1 / run["upload_every_s"])
    total = sum(r["count"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    failures = []
    for r in rows:
        if r["p95"] is not None and r["p95"] >= P95_MS:
            failures.append(f"{r['kind']}: p95 {r['p95']:,.0f} ms >= {P95_MS:,.0f} ms")
    error_pct = 100 * errors / total if total else 0.0
    if error_pct >= MAX_ERROR_PCT:
        failures.append(f"errors {error_pct:.2f} % >= {MAX_ERROR_PCT:g} %")
    for kind, (achieved, wanted) in held.items():
        if kind != "upload" and wanted and achieved < MIN_RATE_HELD * wanted:
            failures.append(f"{kind}: {achieved:.2f}/s held of {wanted:.2f}/s")
    return {
        "label": run["label"],
        "target": target,
        "achieved": total / duration if duration else 0.0,
        "duration": duration,
        "rows": rows,
        "held": held,
        "total": total,
        "errors": errors,
        "error_pct": error_pct,
        "error_messages": run.get("errors", {}),
        "failures": failures,
    }


def markdown(s: dict) -> str:
    verdict = "PASS" if not s["failures"] else "FAIL: " + "; ".join(s["failures"])
    lines = [
        f"### {s['label']}: {s['target']:.1f} requests/s targeted, {s['achieved']:.2f}/s sent for {s['duration']:.0f} s",
        "",
        f"Thresholds (p95 < {P95_MS / 1000:g} s per kind, errors < {MAX_ERROR_PCT:g} %, rate held >= "
        f"{MIN_RATE_HELD:.0%}): **{verdict}**. Requests: {s['total']:,}, errors: {s['errors']} ({s['error_pct']:.2f} %).",
        "",
        "| kind | requests | rate/s (target) | p50 / p95 / p99 ms | TTFT p50 / p95 / p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        target = ""
        if r["mix_kind"] in s["held"] and r["kind"] == r["mix_kind"]:
            target = f" ({s['held'][r['mix_kind']][1]:.2f})"
        elif r["kind"] == "upload" and "upload" in s["held"]:
            target = f" ({s['held']['upload'][1]:.3f})"
        lines.append(
            f"| {r['kind']} | {r['count']:,} | {r['rate']:.2f}{target} | {ms(r['p50'])} / {ms(r['p95'])} / {ms(r['p99'])} "
            f"| {ms(r['ttft_p50'])} / {ms(r['ttft_p95'])} / {ms(r['ttft_p99'])} | {r['errors']} ({r['error_pct']:.2f} %) |"
        )
    held = ", ".join(f"{k} {a:.2f}/{w:.2f}" for k, (a, w) in s["held"].items())
    lines += ["", f"Rate held per kind (achieved/target per s): {held}."]
    if s["error_messages"]:
        lines += ["", "Errors by kind:"]
        for name, messages in s["error_messages"].items():
            for message, n in messages.items():
                lines.append(f"- {name}: {n} x {message}")
    return "\n".join(lines)


def html_report(summaries: list[dict]) -> str:
    """The same figures as ``markdown``, as an HTML page beside Locust's own reports."""
    esc = html.escape
    parts = [
        "<!doctype html><meta charset=utf-8><title>Load test</title>",
        "<style>body{font-family:sans-serif;max-width:72em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child,th:first-child"
        "{text-align:left}.pass{color:#070}.fail{color:#b00}</style>",
        "<h1>Load test</h1>",
    ]
    for s in summaries:
        ok = not s["failures"]
        verdict = "thresholds hold" if ok else "FAIL: " + "; ".join(s["failures"])
        parts.append(
            f"<h2>{esc(s['label'])}: {s['target']:.1f} requests/s targeted, {s['achieved']:.2f}/s sent "
            f"for {s['duration']:.0f} s</h2><p class={'pass' if ok else 'fail'}><b>{esc(verdict)}</b> "
            f"(p95 &lt; {P95_MS / 1000:g} s per kind, errors &lt; {MAX_ERROR_PCT:g} %, rate held &ge; "
            f"{MIN_RATE_HELD:.0%}). Requests {s['total']:,}, errors {s['errors']} ({s['error_pct']:.2f} %). "
            f'<a href="locust-{esc(s["label"])}.html">Locust\'s report</a></p>'
        )
        parts.append(
            "<table><tr><th>kind</th><th>requests</th><th>rate/s</th><th>p50 ms</th><th>p95 ms</th>"
            "<th>p99 ms</th><th>TTFT p50</th><th>TTFT p95</th><th>TTFT p99</th><th>errors</th></tr>"
        )
        for r in s["rows"]:
            cells = [r["kind"], f"{r['count']:,}", f"{r['rate']:.2f}"]
            cells += [ms(r[k]) for k in ("p50", "p95", "p99", "ttft_p50", "ttft_p95", "ttft_p99")]
            cells.append(f"{r['errors']} ({r['error_pct']:.2f} %)")
            parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table><p>Rate held (achieved / target per s): ")
        parts.append(esc(", ".join(f"{k} {a:.2f} / {w:.2f}" for k, (a, w) in s["held"].items())) + "</p>")
        if s["error_messages"]:
            parts.append("<p>Errors by kind:</p><ul>")
            for name, messages in s["error_messages"].items():
                parts += [f"<li>{esc(name)}: {n} &times; {esc(m)}</li>" for m, n in messages.items()]
            parts.append("</ul>")
    return "".join(parts)


def main(out: Path) -> int:
    runs = sorted(out.glob("samples-*.json"), key=lambda p: json.loads(p.read_text())["multiplier"])
    if not runs:
        print(f"no samples-*.json in {out}", file=sys.stderr)
        return 2
    summaries = [summarise(json.loads(p.read_text())) for p in runs]
    text = "\n\n".join(markdown(s) for s in summaries)
    print(text)
    (out / "summary.md").write_text(text + "\n")
    (out / "report.html").write_text(html_report(summaries))
    return 0 if all(not s["failures"] for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
