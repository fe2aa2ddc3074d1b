#!/usr/bin/env python3
"""Prints the Markdown tables of EXPERIMENTS.md from <root>/<data>/<scenario>/results.json.

Usage: python3 tools/summarize_experiments.py [ROOT ...]

With several roots, a cell found in a later root replaces the earlier one (used to swap in
a rerun of one cell without touching the others). The acquisition table reads the per-seed
run directories, so it appears only for roots under runs/, not for the committed experiments/.
"""
import json
import os
import sys

roots = sys.argv[1:] or ["runs/experiments"]
DATASETS = ["builtin", "fashion-mnist"]
SCENARIOS = ["balanced", "long-tail", "redundant"]


def cell_dir(data, scenario):
    found = None
    for root in roots:
        d = os.path.join(root, data, scenario)
        if os.path.exists(os.path.join(d, "results.json")):
            found = d
    return found


def cells():
    """(data, scenario, directory) of every cell that has results, in table order."""
    for data in DATASETS:
        for scenario in SCENARIOS:
            d = cell_dir(data, scenario)
            if d is not None:
                yield data, scenario, d


def pm(l, key, scale=1.0, places=2):
    return f"{l['mean'][key] * scale:.{places}f} ± {l['std'][key] * scale:.{places}f}"


def print_cell(data, scenario, d):
    s = json.load(open(os.path.join(d, "results.json")))["summary"]
    levels = s["levels"]
    rnd = levels["random"]
    print(f"### {data}, {scenario} pool\n")
    sizes = [l["acquired"] for l in rnd]
    print("FID (mean ± std over seeds) after each round, by images acquired:\n")
    print("| strategy | " + " | ".join(str(n) for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for strat, ls in levels.items():
        print(f"| {strat} | " + " | ".join(pm(l, "fid", places=1) for l in ls) + " |")
    print()
    print(f"All metrics at the end ({sizes[-1]} images):\n")
    print("| strategy | FID | KID×1000 | precision | recall | density | coverage | class coverage | class KL |")
    print("|---|---|---|---|---|---|---|---|---|")
    for strat, ls in levels.items():
        l = ls[-1]
        print(f"| {strat} | {pm(l, 'fid')} | {pm(l, 'kid', 1e3, 1)} | {pm(l, 'precision', places=3)} | "
              f"{pm(l, 'recall', places=3)} | {pm(l, 'density', places=3)} | {pm(l, 'coverage', places=3)} | "
              f"{pm(l, 'class_coverage')} | {pm(l, 'class_kl', places=3)} |")
    print()
    b = s.get("budget_to_random_final_fid", {})
    if b:
        print(f"Random's final mean FID is {rnd[-1]['mean']['fid']:.2f}. Share of random's acquisition "
              f"budget (beyond the initial {s['initial']}) each strategy needed to reach it: "
              + ", ".join(f"{k} {'not reached' if v is None else f'{v * 100:.0f}%'}"
                          for k, v in b.items() if k != "random") + ".\n")


def acquisition_stats():
    """What each strategy bought: rare-class share (long tail) and distinct sources (redundant)."""
    print("### What the strategies acquired (mean over seeds)\n")
    print("| dataset | pool | strategy | classes 0–4 among the acquired | fewest / most acquired in one class | distinct source images among the acquired |")
    print("|---|---|---|---|---|---|")
    for data, scenario, base in cells():
        for strat in sorted(os.listdir(base)):
            sdir = os.path.join(base, strat)
            if not os.path.isdir(sdir):
                continue
            rare, distinct, total, lo, hi = [], [], [], [], []
            for seed in sorted(os.listdir(sdir)):
                rj = os.path.join(sdir, seed, "rounds.jsonl")
                if not os.path.exists(rj):
                    continue
                last = [json.loads(l) for l in open(rj)][-1]
                h = last["acquired_histogram"]
                rare.append(sum(h[:5]) / max(sum(h), 1))
                lo.append(min(h))
                hi.append(max(h))
                distinct.append(last["distinct_sources"])
                total.append(last["acquired"])
            if rare:
                n = len(rare)
                print(f"| {data} | {scenario} | {strat} | {sum(rare) / n * 100:.1f}% | "
                      f"{sum(lo) / n:.0f} / {sum(hi) / n:.0f} | "
                      f"{sum(distinct) / n:.0f} of {sum(total) / n:.0f} |")
    print()


def headline():
    """One row per (cell, strategy): each against random at the final budget."""
    print("### Every strategy against random, at the end of the budget\n")
    print("| dataset | pool | strategy | final FID (random's) | budget to reach random's final FID | "
          "coverage − random's | class coverage − random's | recall − random's | precision − random's |")
    print("|---|---|---|---|---|---|---|---|---|")
    for data, scenario, d in cells():
        s = json.load(open(os.path.join(d, "results.json")))["summary"]
        rnd = s["levels"]["random"][-1]["mean"]
        budget = s.get("budget_to_random_final_fid", {})
        for strat, ls in s["levels"].items():
            if strat == "random":
                continue
            m = ls[-1]["mean"]
            b = budget.get(strat)
            b = "not reached" if b is None else f"{b * 100:.0f}%"
            print(f"| {data} | {scenario} | {strat} | {m['fid']:.2f} ({rnd['fid']:.2f}) | {b} | "
                  f"{m['coverage'] - rnd['coverage']:+.3f} | {m['class_coverage'] - rnd['class_coverage']:+.2f} | "
                  f"{m['recall'] - rnd['recall']:+.3f} | {m['precision'] - rnd['precision']:+.3f} |")
    print()


headline()
for data, scenario, d in cells():
    print_cell(data, scenario, d)
acquisition_stats()
