#!/usr/bin/env python3
"""Scenario 5: one 200 MB message (78-character text lines) to smtp-sink.
mailhop: scripts/bench/large-message.sh ("mailhop send --direct" under
/usr/bin/time: peak RSS and MB/s), the same size through the daemon
(one job; the daemon's VmHWM and the submit -> result time), and through
the daemon's LMTP ingress (lmtp_send.py streams it over a UNIX socket;
the daemon spools it and delivers it; VmHWM and MAIL FROM -> the
recipient's reply), and an 8-bit message of the same size through the
daemon to a sink that does not announce 8BITMIME (smtp-sink -8), so
that it is converted to quoted-printable on the way (issue 17). Peer:
"smtp-source -m 1 -l SIZE" (which builds the payload in memory).
Targets: peak RSS < 50 MB (the converted run too) and >= 200 MB/s. 1 MB = 2^20 bytes.
Environment: BENCH_SIZE_MB (200; QUICK 50), REPS, QUICK."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import json
import os
import subprocess

from benchlib import (HERE, OUT_DIR, Bench, env_int, free_port, median, order, rnd, say,
                      shaping_unlimited, target, write_result)

size_mb = env_int("BENCH_SIZE_MB", 200, quick=50)
reps = env_int("REPS", 3)
b = Bench("s5")
port = free_port()
sink = b.sink(f"127.0.0.1:{port}", backlog=100)
# A sink that does not announce 8BITMIME (-8): the 8-bit message below is
# converted to quoted-printable on its way there (issue 17).
port7 = free_port()
sink7 = b.sink(f"127.0.0.1:{port7}", extra=["-8"], backlog=100, name="sink7bit")

# The daemon's message: same shape as large-message.sh's.
msg = b.path("large.eml")
line = ("The quick brown fox jumps over the lazy dog; mailhop large message benchmark."
        .ljust(78, ".") + "\n").encode()
with open(msg, "wb") as f:
    f.write(b"From: a@x.test\nTo: b@y.test\nSubject: mailhop bench\n\n")
    chunk = line * 13000
    left = size_mb * 1048576 - f.tell()
    while left > 0:
        piece = chunk[:left - left % len(line)] if left < len(chunk) else chunk
        if not piece:
            break
        f.write(piece)
        left -= len(piece)
os.chmod(msg, 0o644)
msg_bytes = os.path.getsize(msg)
# The same size in 8-bit text (Latin words in UTF-8), declared 8bit.
msg8 = b.path("large8.eml")
line8 = ("Déjà vu: the quick brown fox jumps over the lazy dog, naïve café crème brûlée."
         .ljust(76, ".") + "\n").encode()
with open(msg8, "wb") as f:
    f.write(b"From: a@x.test\nTo: b@y.test\nSubject: mailhop bench 8bit\nMIME-Version: 1.0\n"
            b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n")
    chunk = line8 * 13000
    left = size_mb * 1048576 - f.tell()
    while left > 0:
        piece = chunk[:left - left % len(line8)] if left < len(chunk) else chunk
        if not piece:
            break
        f.write(piece)
        left -= len(piece)
os.chmod(msg8, 0o644)
mb = msg_bytes / 1048576

peer, direct, daemon, ingress, converted = [], [], [], [], []
for rep in range(reps):
    for who in order(rep):
        if who == "peer":
            r = b.smtp_source(["-m", "1", "-l", str(size_mb * 1048576), sink.listen])
            peer.append({"mb_per_s": rnd(size_mb / r["seconds"]) if r["rc"] == 0 else None,
                         "rss_kb": r["rss_kb"], "seconds": rnd(r["seconds"], 3)})
            say(f"s5 rep {rep + 1}/{reps}: smtp-source: {peer[-1]['mb_per_s']} MB/s, "
                f"RSS {r['rss_kb']} kB")
            continue
        env = dict(os.environ, BENCH_SIZE_MB=str(size_mb))
        p = subprocess.run(["bash", os.path.join(HERE, "large-message.sh")], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900,
                           check=False)
        try:
            with open(os.path.join(OUT_DIR, "large-message.json")) as f:
                j = json.load(f)
            direct.append({"mb_per_s": j.get("throughput_mb_s"), "rss_kb": j.get("peak_rss_kb"),
                           "sent": j.get("sent"), "seconds": j.get("elapsed_s")})
        except (OSError, ValueError):
            say("large-message.sh: " + p.stdout.decode()[-800:])
            direct.append({"mb_per_s": None, "rss_kb": None, "sent": False})
        say(f"s5 rep {rep + 1}/{reps}: mailhop send --direct: {direct[-1]['mb_per_s']} MB/s, "
            f"RSS {direct[-1]['rss_kb']} kB")
        d = b.daemon("[daemon]\nworkers = 4\n" + shaping_unlimited(4))
        r = b.submit(["throughput", "--socket", d.sock, "--jobs", 1, "--conns", 1,
                      "--message", msg, "--nexthop", f"[127.0.0.1]:{port}", "--pid", d.pid,
                      "--sample-interval", 0.02])
        d.stop()
        dm = r.get("daemon") or {}
        daemon.append({"mb_per_s": rnd(mb / r["seconds"]), "rss_kb": dm.get("vmhwm_kb"),
                       "sent": r["statuses"]["sent"] == 1, "seconds": r["seconds"],
                       "cpu_s": dm.get("cpu_s")})
        say(f"s5 rep {rep + 1}/{reps}: mailhop daemon: {daemon[-1]['mb_per_s']} MB/s, "
            f"VmHWM {dm.get('vmhwm_kb')} kB")
        d = b.daemon("[daemon]\nworkers = 4\n" + shaping_unlimited(4), name="convert")
        r = b.submit(["throughput", "--socket", d.sock, "--jobs", 1, "--conns", 1,
                      "--message", msg8, "--nexthop", f"[127.0.0.1]:{port7}", "--pid", d.pid,
                      "--sample-interval", 0.02])
        d.stop()
        dm = r.get("daemon") or {}
        converted.append({"mb_per_s": rnd(mb / r["seconds"]), "rss_kb": dm.get("vmhwm_kb"),
                          "sent": r["statuses"]["sent"] == 1, "seconds": r["seconds"],
                          "cpu_s": dm.get("cpu_s")})
        say(f"s5 rep {rep + 1}/{reps}: mailhop daemon, 8-bit converted: "
            f"{converted[-1]['mb_per_s']} MB/s, VmHWM {dm.get('vmhwm_kb')} kB")
        lmtp_sock = b.path("lmtp.sock")
        d = b.daemon(f'[daemon]\nworkers = 4\nspool_directory = "{b.path("spool")}"\n'
                     + shaping_unlimited(4)
                     + f'\n[[ingress]]\nlisten = "unix:{lmtp_sock}"\n'
                     f'nexthop = "[127.0.0.1]:{port}"\n'
                     f'max_message_size = {msg_bytes * 2}\n', name="ingress")
        p = subprocess.run([sys.executable, os.path.join(HERE, "lmtp_send.py"), lmtp_sock, msg,
                            "rcpt@sink.test"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=900, check=False)
        hwm = None
        try:
            with open(f"/proc/{d.proc.pid}/status") as f:
                for status_line in f:
                    if status_line.startswith("VmHWM:"):
                        hwm = int(status_line.split()[1])
        except OSError:
            pass
        d.stop()
        try:
            j = json.loads(p.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            say("lmtp_send.py: " + p.stdout.decode()[-800:])
            j = {"replies": [], "seconds": None}
        good = bool(j["replies"]) and j["replies"][0].startswith("250 ")
        ingress.append({"mb_per_s": rnd(mb / j["seconds"]) if j.get("seconds") else None,
                        "rss_kb": hwm, "sent": good, "seconds": j.get("seconds"),
                        "reply": (j["replies"] or ["?"])[0][:160]})
        say(f"s5 rep {rep + 1}/{reps}: mailhop LMTP ingress: {ingress[-1]['mb_per_s']} MB/s, "
            f"VmHWM {hwm} kB, {ingress[-1]['reply'][:60]}")


def mrow(label, runs):
    rss = median([r.get("rss_kb") for r in runs])
    return {"client": label, "mb_per_s": median([r.get("mb_per_s") for r in runs]),
            "rss_mb": rnd(rss / 1024, 1) if rss else None}


rows = [mrow(f"smtp-source -m 1 -l {size_mb} MB", peer),
        mrow("mailhop send --direct (large-message.sh)", direct),
        mrow("mailhop daemon, one job", daemon),
        mrow("mailhop daemon, LMTP ingress (spooled)", ingress),
        mrow("mailhop daemon, one 8-bit job to a server without 8BITMIME (converted)",
             converted)]
for r in rows[1:]:
    r["ratio"] = rnd(r["mb_per_s"] / rows[0]["mb_per_s"], 2) \
        if r["mb_per_s"] and rows[0]["mb_per_s"] else None
ok = all(r.get("sent") for r in direct + daemon + ingress + converted)
targets = []
for r, tag in ((rows[1], "send --direct"), (rows[2], "daemon")):
    targets.append(target(f"S5 {tag} peak RSS", r["rss_mb"], "<", 50, "MB"))
    targets.append(target(f"S5 {tag} throughput", r["mb_per_s"], ">=", 200, "MB/s"))
targets.append(target("S5 LMTP ingress peak RSS", rows[3]["rss_mb"], "<", 50, "MB"))
targets.append(target("S5 8-bit to 7-bit conversion peak RSS", rows[4]["rss_mb"], "<", 50, "MB"))
targets.append(target("S5 message sent", 1 if ok else 0, ">=", 1))
write_result(5, {"title": f"large message ({size_mb} MB)",
                 "params": {"size_mb": size_mb, "message_bytes": msg_bytes, "reps": reps},
                 "rows": rows, "targets": targets,
                 "runs": {"smtp_source": peer, "direct": direct, "daemon": daemon,
                          "ingress": ingress, "converted": converted}})
