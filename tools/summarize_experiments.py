#!/usr/bin/env python3
"""Prints the Markdown tables of EXPERIMENTS.md from <root>/<data>/<scenario>/results.json.

Usage: python3 tools/summarize_experiments.py [ROOT ...]

With several roots, a cell found in a later root replaces the earlier one (used to swap in
a rerun of one cell without touching the others). Standard library only.
"""
import json
import os
import sys

roots = sys.argv[1:] or ["runs/experiments"]
DATASETS = ["fashion-mnist", "builtin"]
SCENARIOS = ["long-tail", "balanced", "redundant"]


def cell_dir(data, scenario):
    found = None
    for root in roots:
        d = os.path.join(root, data, scenario)
        if os.path.exists(os.path.join(d, "results.json")):
            found = d
    return found


def cells():
    for data in DATASETS:
        for scenario in SCENARIOS:
            d = cell_dir(data, scenario)
            if d is not None:
                yield data, scenario, d


def pm(ms, places=2, scale=1.0):
    if ms is None:
        return "–"
    return f"{ms['mean'] * scale:.{places}f} ± {ms['std'] * scale:.{places}f}"


def level_pm(level, key, places=2, scale=1.0):
    if key not in level["mean"]:
        return "n/a"
    return f"{level['mean'][key] * scale:.{places}f} ± {level['std'][key] * scale:.{places}f}"


def print_cell(data, scenario, d):
    r = json.load(open(os.path.join(d, "results.json")))
    s = r["summary"]
    levels = s["levels"]
    arms = list(levels)
    if "random" in arms:
        arms.remove("random")
        arms.insert(0, "random")
    print(f"### {data}, {scenario} pool ({r['seeds']} seeds)\n")
    budget = s.get("budget_to_random_final_fid", {})
    print("| arm | FID area (mean FID over budgets) | deficiency vs random | budget to random's final FID | final FID | final recall | final coverage | final class coverage |")
    print("|---|---|---|---|---|---|---|---|")
    for a in arms:
        last = levels[a][-1]
        b = budget.get(a, "–") if budget else "–"
        if b is None:
            b = "not reached"
        elif isinstance(b, float):
            b = f"{b * 100:.0f}%"
        print(f"| {a} | {pm(s['fid_auc'].get(a))} | {pm(s['deficiency'].get(a), 3)} | {b} | "
              f"{level_pm(last, 'fid')} | {level_pm(last, 'recall', 3)} | {level_pm(last, 'coverage', 3)} | "
              f"{level_pm(last, 'class_coverage')} |")
    full = s.get("full_pool") or {}
    if full:
        print(f"| *full pool (reference)* | | 0 | | {pm(full.get('fid'))} | {pm(full.get('recall'), 3)} | "
              f"{pm(full.get('coverage'), 3)} | {pm(full.get('class_coverage'))} |")
    if s.get("budget_note"):
        print(f"\nNote: {s['budget_note']}.")
    print()
    spent = [l["spent"] for l in levels[arms[0]]]
    for key, name, places in [("fid", "FID", 1), ("recall", "recall", 3), ("coverage", "coverage", 3),
                              ("class_coverage", "class coverage", 2)]:
        if key not in levels[arms[0]][0]["mean"]:
            continue
        print(f"{name} by images bought beyond the initial set:\n")
        print("| arm | " + " | ".join(str(b) for b in spent) + " |")
        print("|---|" + "---|" * len(spent))
        for a in arms:
            print(f"| {a} | " + " | ".join(level_pm(l, key, places) for l in levels[a]) + " |")
        print()


for data, scenario, d in cells():
    print_cell(data, scenario, d)
