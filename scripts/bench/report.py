#!/usr/bin/env python3
"""Collects target/bench/scenario-*.json into target/bench/results.json and
prints the table and the PASS/FAIL line of every target. Always exits 0
(targets are reported, not enforced). With --markdown, prints only the
table in the form of docs/benchmarks.md (nothing written)."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import glob
import json
import os
import sys

from benchlib import OUT_DIR, machine

ORDER = ["1", "2", "lat", "3", "8", "4", "5", "6", "7", "9", "10", "11", "12", "13", "14", "15"]


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{nd}f}".rstrip("0").rstrip(".") if nd else f"{v:.0f}"
    return str(v)


def main():
    markdown = "--markdown" in sys.argv[1:]
    files = glob.glob(os.path.join(OUT_DIR, "scenario-*.json"))
    data = {}
    for f in files:
        with open(f) as fh:
            d = json.load(fh)
        data[str(d.get("scenario"))] = d
    keys = [k for k in ORDER if k in data] + sorted(k for k in data if k not in ORDER)
    m = machine()
    print()
    print(f"mailhop benchmarks: {m['nproc']} CPUs, {m['cpu']}, load {m['loadavg_1m']:.2f}"
          if m.get("loadavg_1m") is not None else f"mailhop benchmarks: {m}")
    print()
    hdr = ["Scen.", "Client", "Throughput", "mailhop/peer", "CPU us/msg", "Machine us/msg",
           "Peak RSS MB", "Sessions", "Notes"]
    lines = []
    for k in keys:
        d = data[k]
        for r in d.get("rows", []):
            if "mb_per_s" in r:
                thr = f"{fmt(r['mb_per_s'])} MB/s"
            elif r.get("latency_p50_ms") is not None:
                thr = f"p50 {fmt(r['latency_p50_ms'], 3)} ms"
            elif r.get("latency_mean_ms") is not None:
                thr = f"mean {fmt(r['latency_mean_ms'], 3)} ms"
            elif r.get("msgs_per_s") is not None:
                thr = f"{fmt(r['msgs_per_s'])} msg/s"
            else:
                thr = "-"
            note = r.get("note") or ""
            if r.get("latency_p99_ms") is not None:
                note = (note + " " if note else "") + f"p99 {fmt(r['latency_p99_ms'], 3)} ms"
            if r.get("threads") is not None:
                note = (note + ", " if note else "") + f"{r['threads']} threads"
            ratio = r.get("ratio")
            lines.append([k, r.get("client", ""), thr,
                          (f"{ratio:.2f}×" if isinstance(ratio, (int, float)) else "-"),
                          fmt(r.get("cpu_us_per_msg")), fmt(r.get("system_cpu_us_per_msg")),
                          fmt(r.get("rss_mb")),
                          fmt(r.get("sessions")), note])
    if markdown:
        # The table of docs/benchmarks.md: no padding, empty cells instead of "-".
        hdr = [h.replace("us/msg", "µs/msg") for h in hdr]
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for x in lines:
            print("| " + " | ".join("" if v == "-" else str(v) for v in x) + " |")
        return 0
    widths = [max(len(str(x[i])) for x in lines + [hdr]) for i in range(len(hdr))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(hdr, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for x in lines:
        print("| " + " | ".join(str(v).ljust(w) for v, w in zip(x, widths)) + " |")
    print()
    npass = nfail = 0
    targets = []
    for k in keys:
        for t in data[k].get("targets", []):
            ok = t["pass"]
            npass += ok
            nfail += not ok
            v = t["value"]
            vs = f"{v:.3g}" if isinstance(v, float) else str(v)
            print(f"{'PASS' if ok else 'FAIL'}: {t['name']}: {vs}{t['unit']} "
                  f"(target {t['op']} {t['limit']}{t['unit']})")
            targets.append(dict(t, scenario=k))
    print(f"\n{npass} targets passed, {nfail} failed")
    out = {"machine": m, "scenarios": {k: data[k] for k in keys}, "targets": targets,
           "passed": npass, "failed": nfail}
    path = os.path.join(OUT_DIR, "results.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
