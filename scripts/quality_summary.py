#!/usr/bin/env python3
"""Summarizes scripts/quality.sh's results (one or more JSON Lines files, e.g. its results.jsonl, or
scripts/quality-results/*.jsonl): perplexity mean ± sample standard deviation per mode and
implementation, the bar (quantfleet's mean ≤ the reference's mean + 0.2 %), and the paired difference:
quantfleet − reference on each draw both ran, mean ± its standard error, which says how far apart the
two are beyond the draws' own spread (the bar is about one such standard error for 3-bit modes)."""
import json
import statistics
import sys

BAR = 0.002
rows = [json.loads(line) for path in sys.argv[1:] for line in open(path) if line.strip()]
modes = list(dict.fromkeys(r["mode"] for r in rows))


def stats(impl, mode):
    v = [r["perplexity"] for r in rows if r["impl"] == impl and r["mode"] == mode]
    if not v:
        return None
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), len(v)


def paired(mode):
    by = {}
    for r in rows:
        if r["mode"] == mode:
            by.setdefault(r["draw"], {})[r["impl"]] = r["perplexity"]
    both = [(v["quantfleet"], v["reference"]) for v in by.values() if "quantfleet" in v and "reference" in v]
    if len(both) < 2:
        return "-"
    d = [q - r for q, r in both]
    m, se = statistics.mean(d), statistics.stdev(d) / len(d) ** 0.5
    return f"{m:+.3f} ± {se:.3f} ({100 * m / statistics.mean(r for _, r in both):+.2f} %)"


def fmt(s):
    return "-" if s is None else f"{s[0]:.3f} ± {s[1]:.3f} (n={s[2]})"


print("| mode | reference | quantfleet | bar (ref mean + 0.2 %) | holds | paired Δ ± SE |")
print("|---|---|---|---|---|---|")
failed = False
for m in modes:
    ref, ours = stats("reference", m), stats("quantfleet", m)
    bar = holds = "-"
    if ref and ours:
        limit = ref[0] * (1 + BAR)
        bar = f"≤ {limit:.3f}"
        holds = "yes" if ours[0] <= limit else "NO"
        failed |= holds == "NO"
    print(f"| {m} | {fmt(ref)} | {fmt(ours)} | {bar} | {holds} | {paired(m)} |")
sys.exit(1 if failed else 0)
