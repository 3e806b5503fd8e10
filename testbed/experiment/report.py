"""The experiment report: DIR/report.html (one self-contained file, plots as inline SVG) and DIR/junit.xml.

Plots are drawn by matplotlib (extra ``twisted-testbed[report]``): the
resiliency heatmap and each failing cell's timeline with fault windows shaded.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import shlex
import xml.etree.ElementTree as ET

from testbed.experiment.runner import in_plan_order, read_plan, read_results, summarize

MISSING = "report.html needs matplotlib: pip install 'twisted-testbed[report]'"


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(MISSING) from None
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "testbed"  # stable ids: the same results give the same file
    import matplotlib.pyplot as plt

    return plt


def _svg(plt, fig) -> str:
    """The figure as inline SVG: no XML prolog, doctype, metadata or namespace URLs."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = re.sub(r"<\?xml.*?\?>|<!DOCTYPE.*?>|<metadata>.*?</metadata>", "", svg, flags=re.S)
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg).strip()


def ordered_results(out_dir: str) -> list[dict]:
    """DIR's rows in its plan's cell order, not the order cells finished in (by cell id without a readable plan)."""
    rows = read_results(out_dir)
    try:
        return in_plan_order(read_plan(out_dir), rows)
    except (OSError, ValueError):  # no plan.json, or its scenario is gone or invalid (a ScenarioError)
        return sorted(rows, key=lambda r: r["cell"])


def latest(rows: list[dict]) -> dict[str, dict]:
    return {r["cell"]: r for r in rows}


def heatmap(plt, rows: list[dict]) -> str:
    """Plans (with axis values) x seeds, coloured by pass rate over repeats; the control first."""
    rates: dict[tuple, list[bool]] = {}
    for row in latest(rows).values():
        line, _, _ = row["group"].rpartition("/seed=")
        rates.setdefault((line, row["seed"]), []).append(row["verdict"] == "pass")
    lines = sorted({k[0] for k in rates}, key=lambda l: (not l.startswith("control"), l))
    seeds = sorted({k[1] for k in rates})
    grid = [[(sum(rates[(l, s)]) / len(rates[(l, s)])) if (l, s) in rates else float("nan") for s in seeds]
            for l in lines]
    fig, ax = plt.subplots(figsize=(1.6 + 0.7 * len(seeds), 0.9 + 0.32 * len(lines)))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(seeds)), [f"seed {s}" for s in seeds])
    ax.set_yticks(range(len(lines)), lines, fontsize=8)
    for i, line in enumerate(grid):
        for j, value in enumerate(line):
            if value == value:
                ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="pass rate over repeats")
    ax.set_title("Resiliency: pass rate per plan and seed")
    return _svg(plt, fig)


def timeline(plt, events: list[dict]) -> str:
    """Connections as lanes; commands and replies as marks; from each fired fault to its connection's end, shaded."""
    lanes = sorted({(e.get("server"), e.get("conn")) for e in events if e.get("conn") is not None},
                   key=lambda k: (str(k[0]), k[1]))
    if not lanes:
        return "<p>No connection reached the servers.</p>"
    t0 = min(e["t"] for e in events)
    end = {k: max(e["t"] for e in events if (e.get("server"), e.get("conn")) == k) - t0 for k in lanes}
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.45 * len(lanes)))
    for y, lane in enumerate(lanes):
        mine = [e for e in events if (e.get("server"), e.get("conn")) == lane]
        ax.hlines(y, mine[0]["t"] - t0, end[lane], color="#999", linewidth=1)
        for e in mine:
            x = e["t"] - t0
            if e["kind"] == "command":
                ax.plot(x, y, "o", color="#1f77b4", markersize=4)
                ax.annotate(str(e.get("command", "")), (x, y), xytext=(0, 5), textcoords="offset points",
                            fontsize=6, rotation=45)
            if e["kind"] == "reply" or (e["kind"] == "command" and ("code" in e or "status" in e)):
                # A command answered at once carries its reply (SMTP code, HTTP status).
                code = e.get("code", e.get("status"))
                ax.plot(x, y, "s", color="#d62728" if str(code)[:1] in "45" else "#2ca02c", markersize=3)
                ax.annotate(str(code), (x, y), xytext=(0, -9), textcoords="offset points", fontsize=6)
            elif e["kind"] == "fault" and e.get("fired"):
                ax.axvspan(x, max(end[lane], x + 0.002), ymin=(y + 0.1) / len(lanes), ymax=(y + 0.9) / len(lanes),
                           color="#ff7f0e", alpha=0.3)
                ax.annotate(f"{e.get('action')}@{e.get('on')}", (x, y), xytext=(2, -16),
                            textcoords="offset points", fontsize=6, color="#c55a00")
    ax.set_yticks(range(len(lanes)), [f"{s} #{c}" for s, c in lanes], fontsize=7)
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    ax.set_xlabel("seconds since the first event")
    return _svg(plt, fig)


def coverage(rows: list[dict]) -> list[tuple[str, dict]]:
    """(plan, rule) pairs of the plans (explored ones included) whose rule never fired in any cell."""
    fired: set[tuple[str, int]] = set()
    rules: dict[tuple[str, int], dict] = {}
    for row in rows:
        for i, rule in enumerate(row["faults"]):
            rules[(row["plan"], i)] = rule
        for fault in row["fired"]:
            kind, _, index = str(fault.get("rule", "")).partition(":")
            if kind == "scenario" and index.isdigit():
                fired.add((row["plan"], int(index)))
    return [(plan, rule) for (plan, i), rule in sorted(rules.items(), key=lambda kv: kv[0]) if (plan, i) not in fired]


def _commands(out_dir: str, cell: str) -> str:
    q = shlex.quote
    return (f"testbed experiment replay {q(out_dir)} {q(cell)}\n"
            f"testbed experiment shrink {q(out_dir)} {q(cell)}")


def _load_journal(out_dir: str, row: dict) -> list[dict]:
    with open(os.path.join(out_dir, row["journal"]), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_html(out_dir: str) -> str:
    """Write DIR/report.html from DIR/results.jsonl; returns its path."""
    plt = _pyplot()
    rows = ordered_results(out_dir)
    summary = summarize(rows)
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Experiment report</title><style>"
             "body{font-family:sans-serif;margin:2em;max-width:1100px}pre{background:#f4f4f4;padding:.5em;"
             "white-space:pre-wrap}.pass{color:#2a7}.fail,.error,.timeout{color:#c22}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}</style></head><body>",
             "<h1>Experiment report</h1><h2>Summary</h2><table>"]
    for key in ("cells", "pass", "fail", "error", "timeout"):
        parts.append(f"<tr><th>{key}</th><td>{summary[key]}</td></tr>")
    parts.append("</table>")
    if summary["broken_control"]:
        parts.append("<p class='fail'><b>Broken client:</b> it fails without any fault ("
                     + esc(", ".join(summary["broken_control"])) + "): fix that before reading the rest.</p>")
    parts.append("<h3>Flaky cells</h3>" + ("<ul>" + "".join(f"<li>{esc(g)}</li>" for g in summary["flaky"]) + "</ul>"
                                           if summary["flaky"] else "<p>None: every repeat agreed.</p>"))
    parts.append(f"<h2 id='heatmap'>Resiliency heatmap</h2><div class='heatmap'>{heatmap(plt, rows)}</div>")
    missed = coverage(rows)
    parts.append("<h2>Fault coverage</h2>" + (
        "<p>Rules that never fired:</p><ul>" + "".join(f"<li>{esc(p)}: <code>{esc(json.dumps(r))}</code></li>"
                                                     for p, r in missed) + "</ul>"
        if missed else "<p>Every rule fired at least once.</p>"))
    parts.append("<h2>Cells</h2>")
    for row in sorted(latest(rows).values(), key=lambda r: (r["verdict"] == "pass", r["cell"])):
        verdict = row["verdict"] + (" (flaky)" if row["group"] in summary["flaky"] else "")
        parts.append(f"<details class='cell'{' open' if row['verdict'] != 'pass' else ''}><summary>"
                     f"<span class='{row['verdict']}'>{esc(verdict)}</span> {esc(row['cell'])} "
                     f"({row['duration']:.2f}s, exit {row['exit_code']})</summary>")
        parts.append("<table><tr><th>check</th><th>result</th><th>why</th></tr>" + "".join(
            f"<tr><td>{esc(c['check'])}</td><td class='{'pass' if c['ok'] else 'fail'}'>{'ok' if c['ok'] else 'FAILED'}"
            f"</td><td>{esc(c['detail'])}</td></tr>" for c in row["checks"]) + "</table>")
        parts.append("<p>Faults fired:</p><ul>" + "".join(
            f"<li>{esc(f['server'])} connection {f['conn']}: {esc(f['action'])} at {esc(f['on'])}</li>"
            for f in row["fired"]) + "</ul>" if row["fired"] else "<p>No fault fired.</p>")
        if row.get("journal"):
            parts.append(f"<div class='timeline'>{timeline(plt, _load_journal(out_dir, row))}</div>")
        tail = (row.get("stdout_tail") or "") + (row.get("stderr_tail") or "")
        parts.append(f"<p>Client output (tail):</p><pre>{esc(tail[-1500:]) or '(none)'}</pre>")
        parts.append(f"<p>Replay, shrink:</p><pre>{esc(_commands(out_dir, row['cell']))}</pre></details>")
    parts.append("</body></html>")
    path = os.path.join(out_dir, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    return path


def write_junit(out_dir: str) -> str:
    """Write DIR/junit.xml: one test case a cell, failures with each failed check's reason."""
    rows = list(latest(ordered_results(out_dir)).values())
    summary = summarize(rows)
    suite = ET.Element("testsuite", name="experiment", tests=str(len(rows)),
                       failures=str(summary["fail"]), errors=str(summary["error"] + summary["timeout"]))
    for row in rows:
        case = ET.SubElement(suite, "testcase", classname=row["plan"], name=row["cell"], time=str(row["duration"]))
        failed = [f"{c['check']}: {c['detail']}" for c in row["checks"] if not c["ok"]]
        if row["verdict"] == "fail":
            ET.SubElement(case, "failure", message=failed[0] if failed else "failed").text = "\n".join(failed)
        elif row["verdict"] in ("error", "timeout"):
            ET.SubElement(case, "error", message=row["verdict"]).text = row.get("stderr_tail", "")
    path = os.path.join(out_dir, "junit.xml")
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    return path
