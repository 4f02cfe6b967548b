#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Joins the benchmark boots of scripts/svm bench into LOGS/bench.json.

Usage: bench-report.py LOGS COMMIT KERNEL

Reads LOGS/bench-METHOD-BOOT.jsonl (one figure a line, as svm-bench prints
it, with the method and boot added) and writes:
- LOGS/bench.json, the single source: a figure a name, with each boot's
  numbers, its ratio as the worst boot's and how far the boots differ;
- LOGS/bench.md, the table made from it, also on standard output.
"""

import datetime
import glob
import json
import os
import sys


def load(logs):
    figures = {}
    for path in sorted(glob.glob(os.path.join(logs, "bench-*.jsonl"))):
        for line in open(path):
            if not line.strip():
                continue
            run = json.loads(line)
            f = figures.setdefault(run["name"], {
                "name": run["name"], "unit": run["unit"], "method": run["method"],
                "peer_name": run["peer_name"], "target": run["target"], "runs": run["runs"],
                "boots": []})
            f["boots"].append({k: run[k] for k in
                               ("boot", "ours", "ours_p10", "ours_p90", "peer", "ratio")})
    for f in figures.values():
        f["boots"].sort(key=lambda b: b["boot"])
        first = f["boots"][0]
        f.update({k: first[k] for k in ("ours", "ours_p10", "ours_p90", "peer")})
        if f["peer_name"]:
            ratios = [b["ratio"] for b in f["boots"]]
            f["ratio"] = min(ratios)
            # How far the boots' ratios are apart, relative to the smaller.
            f["boot_diff"] = (max(ratios) - min(ratios)) / min(ratios) if min(ratios) > 0 else 0
            f["met"] = f["target"] == 0 or f["ratio"] >= f["target"]
    return list(figures.values())


def table(figures, nboots):
    boots = " | ".join(f"ratio, boot {i + 1}" for i in range(nboots))
    lines = [f"| figure | ours (boot 1) | peer | {boots} | boots apart | target | method |",
             "|---" * (6 + nboots) + "|"]
    for f in figures:
        ours = f"{f['ours']:.4g} {f['unit']} ({f['ours_p10']:.3g}-{f['ours_p90']:.3g})"
        if f["peer_name"]:
            ratios = " | ".join(f"{b['ratio']:.2f}x" for b in f["boots"])
            ratios += " | -" * (nboots - len(f["boots"]))
            target = f"{f['target']:g}x {'met' if f['met'] else '**missed**'}" if f["target"] else "-"
            rest = f"{f['peer_name']} | {ratios} | {100 * f['boot_diff']:.1f}% | {target}"
        else:
            rest = "-" + " | -" * nboots + " | - | -"
        lines.append(f"| {f['name']} | {ours} | {rest} | {f['method']} |")
    return "\n".join(lines) + "\n"


def main():
    logs, commit, kernel = sys.argv[1:4]
    figures = load(logs)
    nboots = max(len(f["boots"]) for f in figures)
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    guest = "QEMU TCG, 2 vCPUs: -icount shift=0,sleep=off (method icount) or MTTCG (mttcg)"
    json.dump({"date": date, "commit": commit, "kernel": kernel + " (non-debug)",
               "guest": guest, "boots": nboots, "figures": figures},
              open(os.path.join(logs, "bench.json"), "w"), indent=1)
    compared = [f for f in figures if f["peer_name"]]
    worst = max((f["boot_diff"] for f in compared), default=0)
    missed = [f["name"] for f in compared if not f["met"]]
    summary = (f"{nboots} boots of {commit}, {kernel} (non-debug), {date[:10]}: median "
               f"(p10-p90) of each figure's runs; ratio > 1: ours better; a figure's ratio "
               f"is its worst boot's. Boots at most {100 * worst:.1f}% apart; "
               f"{len(compared) - len(missed)} of {len(compared)} targets met.\n")
    md = summary + "\n" + table(figures, nboots)
    open(os.path.join(logs, "bench.md"), "w").write(md)
    print(md, end="")
    print(f"(all figures: {logs}/bench.json; Markdown: {logs}/bench.md)")


if __name__ == "__main__":
    main()
