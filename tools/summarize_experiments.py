#!/usr/bin/env python3
"""Prints the Markdown tables of EXPERIMENTS.md from runs/experiments/<data>/<scenario>/results.json.

Usage: python3 tools/summarize_experiments.py [runs/experiments]
"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "runs/experiments"
for data in ["builtin", "fashion-mnist"]:
    for scenario in ["balanced", "long-tail", "redundant"]:
        path = os.path.join(root, data, scenario, "results.json")
        if not os.path.exists(path):
            continue
        r = json.load(open(path))
        s = r["summary"]
        print(f"### {data}, {scenario} pool\n")
        print("| strategy | images | FID | KID×1000 | precision | recall | coverage | class coverage | class KL |")
        print("|---|---|---|---|---|---|---|---|---|")
        for strat, levels in s["levels"].items():
            for l in levels:
                m, d = l["mean"], l["std"]
                f = lambda k, sc=1.0, p=2: f"{m[k]*sc:.{p}f} ± {d[k]*sc:.{p}f}"
                print(f"| {strat} | {l['acquired']} | {f('fid')} | {f('kid', 1e3)} | {f('precision', p=3)} | {f('recall', p=3)} | {f('coverage', p=3)} | {f('class_coverage')} | {f('class_kl', p=3)} |")
        print()
        b = s.get("budget_to_random_final_fid", {})
        if b:
            rnd = s["levels"]["random"][-1]
            print(f"Random's final mean FID: {rnd['mean']['fid']:.2f} at {rnd['acquired']} images. Budget (beyond the initial {s['initial']}) each strategy needed to reach it, as a share of random's:")
            for strat, v in b.items():
                print(f"- {strat}: {'not reached' if v is None else f'{v*100:.0f}%'}")
            finals = {k: v[-1] for k, v in s["levels"].items()}
            print()
            for strat, l in finals.items():
                if strat == "random":
                    continue
                dc = l["mean"]["coverage"] - rnd["mean"]["coverage"]
                dcc = l["mean"]["class_coverage"] - rnd["mean"]["class_coverage"]
                print(f"- final {strat} − random: coverage {dc:+.3f}, class coverage {dcc:+.2f}, FID {l['mean']['fid'] - rnd['mean']['fid']:+.2f}")
        print()


def acquisition_stats(root):
    """What each strategy bought: rare-class share (long tail) and distinct sources (redundant)."""
    print("### What the strategies acquired\n")
    print("| dataset | pool | strategy | classes 0–4 among the 600 acquired | distinct source images among the 600 |")
    print("|---|---|---|---|---|")
    for data in ["builtin", "fashion-mnist"]:
        for scenario in ["balanced", "long-tail", "redundant"]:
            base = os.path.join(root, data, scenario)
            if not os.path.isdir(base):
                continue
            for strat in sorted(os.listdir(base)):
                sdir = os.path.join(base, strat)
                if not os.path.isdir(sdir):
                    continue
                rare, distinct = [], []
                for seed in sorted(os.listdir(sdir)):
                    rj = os.path.join(sdir, seed, "rounds.jsonl")
                    if not os.path.exists(rj):
                        continue
                    last = [json.loads(l) for l in open(rj)][-1]
                    h = last["acquired_histogram"]
                    rare.append(sum(h[:5]) / max(sum(h), 1))
                    distinct.append(last["distinct_sources"])
                if rare:
                    mr = sum(rare) / len(rare)
                    md = sum(distinct) / len(distinct)
                    print(f"| {data} | {scenario} | {strat} | {mr*100:.1f}% | {md:.0f} |")
    print()


acquisition_stats(root)
