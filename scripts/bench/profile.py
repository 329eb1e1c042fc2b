#!/usr/bin/env python3
"""Where mailhop's CPU goes in the relay scenarios: runs one scenario-1
(--mode reuse), scenario-2 (--mode noreuse) or scenario-7 (--mode lmtp)
load against smtp-sink with "perf record -g" on the daemon, then sorts every
sample into a category from its call chain (kernel and user frames) and
prints the share of samples and the CPU microseconds per message of each,
plus the daemon's CPU and context switches per thread class (from /proc)
and its system calls per message ("perf stat -e raw_syscalls:sys_enter").
Three passes, each on a fresh daemon: unprofiled (throughput, CPU/msg, the
per-thread figures), under perf stat, under perf record; the category
shares come from the last and are applied to the CPU/msg of the first.

User-space call chains need frame pointers: with PROFILE_BUILD=1 a copy is
built into target/bench-prof with RUSTFLAGS="-C force-frame-pointers=yes -g"
(the normal build is not touched); MAILHOP=path measures another binary.

Usage: profile.py [--mode reuse|noreuse|lmtp] [--jobs N] [--freq HZ]
Writes target/bench/profile-MODE.json. Needs perf (linux-perf)."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

from benchlib import OUT_DIR, ROOT, Bench, find_prog, free_port, say, shaping_unlimited

# (category, regex over the joined call chain), first match wins.
CATEGORIES = [
    ("crossbeam channel spinning (sched_yield)", r"sched_yield"),
    ("context switch: worker waits for the server's reply (recv)",
     r"(finish_task_switch|__schedule).*(tcp_recvmsg|sk_wait_data)"),
    ("context switch: channel/lock waits (futex)", r"(finish_task_switch|__schedule).*futex"),
    ("context switch: other (poll, sleep, preemption)", r"finish_task_switch|__schedule"),
    ("TCP send incl. loopback delivery to the sink", r"tcp_sendmsg|__sys_sendto|sendmsg"),
    ("TCP receive (copy, ack)", r"tcp_recvmsg|__sys_recvfrom|recvmsg"),
    ("connect/accept/close of SMTP sockets", r"__sys_connect|inet_stream_connect|tcp_close|"
                                             r"__sys_socket|inet_release|tcp_v4_connect"),
    ("setsockopt (per-step socket timeouts)", r"setsockopt"),
    ("log lines (formatting, stderr write)", r"env_logger|log::Log|LineLogger|JobLines|write_stderr|anstream|StderrLock"),
    ("message file open/stat/read/close", r"do_sys_openat2|openat|statx|open_for_peer|"
                                          r"__x64_sys_close|ksys_read|vfs_read|filp_close"),
    ("JSON (job parse, result serialise)", r"serde_json|serde::|serde_core"),
    ("memory: malloc/free/memset/page faults/brk", r"malloc|_int_free|cfree|realloc|memset|"
                                                   r"__brk|munmap|madvise|exc_page_fault|"
                                                   r"mprotect|__rust_alloc|__rust_dealloc"),
    ("futex syscalls (channel/condvar wakeups)", r"futex"),
    ("DNS / nexthop / TLS policy lookups", r"resolve|nexthop|tls_policy|mxlist"),
    ("SMTP protocol code (commands, replies, body)", r"mailhop::smtp|mailhop::session|"
                                                     r"mailhop::transport"),
]


def perf_script_samples(data):
    """Yields (comm, [frames leaf->root]) from "perf script"."""
    p = subprocess.Popen([find_prog("perf"), "script", "-i", data, "-F", "comm,tid,ip,sym"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         errors="replace")
    comm, frames = None, []
    for line in p.stdout:
        if not line.strip():
            if comm is not None:
                yield comm, frames
            comm, frames = None, []
            continue
        if not line.startswith((" ", "\t")):
            comm = line.split()[0] if line.split() else "?"
            frames = []
        else:
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else parts[0])
    if comm is not None:
        yield comm, frames
    p.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="reuse", choices=["reuse", "noreuse", "lmtp"])
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--freq", type=int, default=2999)
    args = ap.parse_args()
    perf = find_prog("perf")
    if os.environ.get("PROFILE_BUILD", "0") not in ("", "0") and not os.environ.get("MAILHOP"):
        tdir = os.path.join(ROOT, "target", "bench-prof")
        env = dict(os.environ, CARGO_TARGET_DIR=tdir,
                   RUSTFLAGS="-C force-frame-pointers=yes -g")
        say("building a frame-pointer copy into target/bench-prof")
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, env=env, check=True,
                       timeout=1800)
        os.environ["MAILHOP"] = os.path.join(tdir, "release", "mailhop")
    b = Bench("prof")
    msg = b.message(1024)
    rcpts = 1
    if args.mode == "lmtp":
        sockdir = b.path("sock")
        os.makedirs(sockdir)
        os.chmod(sockdir, 0o1777)
        sock = os.path.join(sockdir, "lmtp")
        b.sink(f"unix:{sock}", lmtp=True)
        nexthop = f"unix:{sock}"
        rcpts = 5
        config = f'[daemon]\nworkers = 20\n[cache]\ndestinations = ["{nexthop}"]\n'
        extra = ["--transport", "lmtp", "--recipients", 5, "--cache-hints"]
    else:
        port = free_port()
        b.sink(f"127.0.0.1:{port}")
        nexthop = f"[127.0.0.1]:{port}"
        if args.mode == "reuse":
            config = '[daemon]\nworkers = 20\n[cache]\ndestinations = ["127.0.0.1"]\n'
        else:
            config = "[daemon]\nworkers = 20\n[cache]\non_demand = false\n"
        extra = []
    config += shaping_unlimited(20)
    data = b.path("perf.data")
    stat_out = b.path("perf-stat.txt")
    submit_args = ["throughput", "--jobs", args.jobs, "--conns", 20, "--message", msg,
                   "--nexthop", nexthop] + extra

    def one_pass(perf_argv):
        """A fresh daemon, the load, perf (if any) attached to the daemon."""
        d = b.daemon(config)
        p = None
        if perf_argv:
            p = subprocess.Popen([perf] + perf_argv + ["-p", str(d.pid)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            b.procs.append(p)
            time.sleep(0.5)
        r = b.submit(submit_args[:1] + ["--socket", d.sock, "--pid", d.pid] + submit_args[1:])
        if p:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
            b.procs.remove(p)
        d.stop()
        return r

    # 1: unprofiled figures; 2: system calls and context switches; 3: samples.
    r = one_pass(None)
    one_pass(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter,context-switches,task-clock",
              "-o", stat_out])
    rp = one_pass(["record", "-q", "-F", str(args.freq), "-g", "-o", data])
    dm = r.get("daemon") or {}
    cpu_per_msg = dm.get("cpu_us_per_job") or 0
    counters = {}
    try:
        with open(stat_out) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) > 2 and parts[0].replace(".", "").isdigit():
                    counters[parts[2]] = float(parts[0])
    except OSError:
        pass
    cats = {name: 0 for name, _ in CATEGORIES}
    cats["other kernel"] = 0
    cats["other user space"] = 0
    comms = {}
    total = 0
    compiled = [(name, re.compile(rx)) for name, rx in CATEGORIES]
    for comm, frames in perf_script_samples(data):
        total += 1
        cls = re.sub(r"\d+", "", comm)
        comms[cls] = comms.get(cls, 0) + 1
        chain = " ".join(frames)
        for name, rx in compiled:
            if rx.search(chain):
                cats[name] += 1
                break
        else:
            leaf = frames[0] if frames else ""
            if leaf.startswith(("[unknown]",)) or not frames:
                cats["other user space"] += 1
            elif re.match(r"^[a-z_0-9.]+(\+0x[0-9a-f]+)?$", leaf):
                cats["other kernel"] += 1
            else:
                cats["other user space"] += 1
    out = {"mode": args.mode, "jobs": args.jobs, "recipients_per_job": rcpts,
           "jobs_per_s": r.get("jobs_per_s"), "daemon_cpu_us_per_msg": cpu_per_msg,
           "jobs_per_s_under_perf_record": rp.get("jobs_per_s"),
           "samples": total,
           "syscalls_per_msg": round(counters.get("raw_syscalls:sys_enter", 0) / args.jobs, 1),
           "context_switches_per_msg": round(counters.get("context-switches", 0) / args.jobs, 2),
           "categories": {}, "by_thread_samples": {}, "by_thread_proc": dm.get("by_thread")}
    print(f"\nmailhop profile, mode {args.mode}: {r.get('jobs_per_s')} msg/s unprofiled "
          f"({rp.get('jobs_per_s')} under perf record), daemon CPU "
          f"{cpu_per_msg} us/msg, {out['syscalls_per_msg']} syscalls/msg, "
          f"{out['context_switches_per_msg']} context switches/msg, {total} samples\n")
    print(f"{'category':62} {'share':>7} {'us/msg':>8}")
    for name, n in sorted(cats.items(), key=lambda kv: -kv[1]):
        if not n:
            continue
        share = n / total if total else 0
        out["categories"][name] = {"share": round(share, 4),
                                   "us_per_msg": round(share * cpu_per_msg, 1)}
        print(f"{name:62} {share * 100:6.1f}% {share * cpu_per_msg:8.1f}")
    print("\nsamples by thread class:")
    for cls, n in sorted(comms.items(), key=lambda kv: -kv[1]):
        out["by_thread_samples"][cls] = round(n / total, 4) if total else 0
        print(f"  {cls:20} {n / total * 100:6.1f}%")
    print("\n/proc per thread class (CPU us/msg, context switches/msg):")
    for cls, v in (dm.get("by_thread") or {}).items():
        print(f"  {cls:20} {v.get('cpu_us_per_job', 0):8.1f} us  {v.get('cs_per_job', 0):6.2f} cs"
              f"  ({v.get('threads')} threads)")
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"profile-{args.mode}.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
