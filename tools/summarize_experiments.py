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
    budget = s.get("budget_to_random_best_fid", {})
    print("| arm | FID area (mean FID over budgets) | deficiency vs random | budget to random's best FID | final FID | final recall | final coverage | final class coverage |")
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


def acquisition_table(root):
    """What each arm bought beyond the initial set, from the per-seed runs (root/<data>/<scenario>/<arm>/seedK)."""
    rows = []
    for data in DATASETS:
        for scenario in SCENARIOS:
            cell = os.path.join(root, data, scenario)
            if not os.path.isdir(cell):
                continue
            for arm in sorted(os.listdir(cell)):
                seeds = [os.path.join(cell, arm, s) for s in sorted(os.listdir(os.path.join(cell, arm)))
                         if s.startswith("seed")] if os.path.isdir(os.path.join(cell, arm)) else []
                shares, lows, highs = [], [], []
                for sd in seeds:
                    rounds = sorted(f for f in os.listdir(os.path.join(sd, "rounds"))
                                    if f.startswith("round_") and f.endswith(".json")) if os.path.isdir(os.path.join(sd, "rounds")) else []
                    hist = None
                    for f in rounds:
                        r = json.load(open(os.path.join(sd, "rounds", f)))
                        h = r.get("new_class_histogram") or []
                        if r.get("round", 0) == 0 or not h:
                            continue
                        hist = h if hist is None else [a + b for a, b in zip(hist, h)]
                    if hist and sum(hist) > 0:
                        shares.append(sum(hist[:5]) / sum(hist))
                        lows.append(min(hist))
                        highs.append(max(hist))
                if shares:
                    n = len(shares)
                    rows.append(f"| {data} | {scenario} | {arm} | {100 * sum(shares) / n:.1f}% | "
                                f"{sum(lows) / n:.0f} / {sum(highs) / n:.0f} | {n} |")
    if rows:
        print("What each arm bought beyond the initial set (mean over seeds):\n")
        print("| dataset | pool | arm | classes 0–4 among the bought | fewest / most bought in one class | seeds |")
        print("|---|---|---|---|---|---|")
        print("\n".join(rows))
        print()


for root in roots:
    acquisition_table(root)
