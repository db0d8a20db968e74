#!/usr/bin/env python3
"""Aggregates the oha runs of bench/load/run.sh.

runs.tsv has one line per measured run: phase (sat|lat), scenario, target, round, path of oha's JSON,
CPU ticks of the target's proxy process(es) during the run, CPU ticks of the mock upstream.

  report.py rate RUNS SCENARIO FRACTION   the fixed rate: FRACTION x the slowest target's median
                                          saturation req/s, to two significant digits
  report.py table RUNS --clk-tck N [--setting TEXT]...   the Markdown report
"""

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict

TARGET_ORDER = ["direct", "passthrough", "chatgate_base", "chatgate", "nginx"]
SCENARIO_NAMES = {"nonstream": "non-streamed", "stream": "streamed, 50 chunks"}
DEADLINE = "aborted due to deadline"


def load(path):
    runs = []
    with open(path) as f:
        for line in f:
            phase, scenario, target, rnd, out, proxy_ticks, mock_ticks = line.rstrip("\n").split("\t")
            with open(out) as j:
                oha = json.load(j)
            codes = oha.get("statusCodeDistribution", {})
            ok = codes.get("200", 0)
            errors = sum(v for k, v in oha.get("errorDistribution", {}).items() if DEADLINE not in k)
            runs.append(
                {
                    "phase": phase,
                    "scenario": scenario,
                    "target": target,
                    "round": int(rnd),
                    "ok": ok,
                    "bad": sum(codes.values()) - ok + errors,
                    "seconds": oha["summary"]["total"],
                    "p50": oha["latencyPercentiles"].get("p50"),
                    "p99": oha["latencyPercentiles"].get("p99"),
                    "proxy_ticks": int(proxy_ticks),
                    "mock_ticks": int(mock_ticks),
                }
            )
    return runs


def group(runs, phase):
    out = defaultdict(list)
    for r in runs:
        if r["phase"] == phase:
            out[(r["scenario"], r["target"])].append(r)
    return out


def rps(run):
    return run["ok"] / run["seconds"] if run["seconds"] else 0.0


def cmd_rate(args):
    sat = group(load(args.runs), "sat")
    medians = [statistics.median(rps(r) for r in rs) for (s, _), rs in sat.items() if s == args.scenario]
    slowest = min((m for m in medians if m > 0), default=0)
    rate = max(1.0, slowest * args.fraction)
    digits = max(0, int(math.floor(math.log10(rate))) - 1)
    print(int(rate // 10**digits * 10**digits))


def fmt(value, unit_digits):
    if value is None:
        return "—"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{unit_digits}f}"


def with_ratios(value, pt, ng, digits):
    """`value (÷passthrough / ÷nginx)`."""
    if value is None:
        return "—"

    def ratio(base):
        return f"{value / base:.2f}" if base else "—"

    return f"{fmt(value, digits)} ({ratio(pt)} / {ratio(ng)})"


def cmd_table(args):
    runs = load(args.runs)
    sat, lat = group(runs, "sat"), group(runs, "lat")
    tick_us = 1e6 / args.clk_tck
    rows = {}
    for key in set(sat) | set(lat):
        s, l = sat.get(key, []), lat.get(key, [])
        sat_ok, lat_ok = sum(r["ok"] for r in s), sum(r["ok"] for r in l)
        proxy = key[1] != "direct"
        rows[key] = {
            "rps": statistics.median(rps(r) for r in s) if s else None,
            "p50": statistics.median(r["p50"] * 1e3 for r in l if r["p50"] is not None) if l else None,
            "p99": statistics.median(r["p99"] * 1e3 for r in l if r["p99"] is not None) if l else None,
            "rate_rps": statistics.median(rps(r) for r in l) if l else None,
            "cpu_sat": sum(r["proxy_ticks"] for r in s) * tick_us / sat_ok if proxy and sat_ok else None,
            "cpu_lat": sum(r["proxy_ticks"] for r in l) * tick_us / lat_ok if proxy and lat_ok else None,
            "mock_cpu": sum(r["mock_ticks"] for r in s) * tick_us / sat_ok if sat_ok else None,
            "bad": sum(r["bad"] for r in s + l),
            "rounds": len(s),
        }

    print("# chatgate load benchmark\n")
    for setting in args.setting:
        print(f"- {setting}")
    print(
        "\nEach cell: value (÷ passthrough / ÷ nginx). req/s: median over rounds of HTTP 200 responses per "
        "second at saturation. p50/p99: median over rounds of the latency percentiles (whole response, "
        "corrected for coordinated omission) at the fixed rate. CPU: utime+stime of the proxy's "
        "process(es) per HTTP 200 response, over all rounds, at saturation and at the fixed rate "
        "(resolution 1/CLK_TCK s per run). mock: the upstream's CPU per response at saturation. "
        "bad: non-200 responses and errors other than runs cut at their deadline.\n"
    )
    print(
        "| scenario | target | req/s | p50 ms | p99 ms | CPU µs/req (sat) | CPU µs/req (rate) "
        "| achieved rate | mock µs/req | bad |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scenario in ["nonstream", "stream"]:
        base = {t: rows.get((scenario, t)) for t in ("passthrough", "nginx")}
        for target in TARGET_ORDER:
            row = rows.get((scenario, target))
            if row is None:
                continue

            def cell(metric, digits):
                pt, ng = (base[b][metric] if base[b] else None for b in ("passthrough", "nginx"))
                return with_ratios(row[metric], pt, ng, digits)

            print(
                f"| {SCENARIO_NAMES[scenario]} | {target} | {cell('rps', 0)} | {cell('p50', 3)} "
                f"| {cell('p99', 3)} | {cell('cpu_sat', 1)} | {cell('cpu_lat', 1)} "
                f"| {fmt(row['rate_rps'], 0)} | {fmt(row['mock_cpu'], 1)} | {row['bad']} |"
            )
    paired(runs)


def paired(runs):
    """chatgate against chatgate_base, round by round: both run back to back in each round, so
    the ratio of one round cancels most of the machine's drift between rounds."""
    by = {(r["phase"], r["scenario"], r["target"], r["round"]): r for r in runs}
    lines = []
    for scenario in ["nonstream", "stream"]:
        for phase, name in (("sat", "saturation"), ("lat", "fixed rate")):
            ratios = []
            for (ph, sc, target, rnd), on in by.items():
                off = by.get((ph, sc, "chatgate_base", rnd))
                if (ph, sc, target) != (phase, scenario, "chatgate") or not off:
                    continue
                if on["ok"] and off["ok"] and off["proxy_ticks"]:
                    ratios.append((on["proxy_ticks"] / on["ok"]) / (off["proxy_ticks"] / off["ok"]))
            if ratios:
                ratios.sort()
                lines.append(
                    f"| {SCENARIO_NAMES[scenario]} | {name} | {statistics.median(ratios):.2f} "
                    f"| {ratios[0]:.2f}–{ratios[-1]:.2f} | {len(ratios)} |"
                )
    if lines:
        print(
            "\nchatgate ÷ chatgate_base, CPU per request round by round (the two run back to back "
            "in each round): the median of the rounds' ratios and their range.\n"
        )
        print("| scenario | phase | median ratio | range | rounds |")
        print("|---|---|---:|---:|---:|")
        for line in lines:
            print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    rate = sub.add_parser("rate")
    rate.add_argument("runs")
    rate.add_argument("scenario")
    rate.add_argument("fraction", type=float)
    table = sub.add_parser("table")
    table.add_argument("runs")
    table.add_argument("--clk-tck", type=int, default=100)
    table.add_argument("--setting", action="append", default=[])
    args = parser.parse_args()
    {"rate": cmd_rate, "table": cmd_table}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
