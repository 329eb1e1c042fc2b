#!/usr/bin/env python3
"""An LMTP client for the benchmarks: sends one message file (LF or CRLF
line ends; dot-stuffed and CRLF-terminated on the way) to an LMTP server
on a UNIX socket or host:port, and prints one JSON line: the replies after
the final dot, the seconds from MAIL FROM to the last reply, and the bytes
sent. Usage: lmtp_send.py SOCKET|HOST:PORT MESSAGE RCPT... Loopback only;
every read has a timeout (600 s)."""
import sys

sys.dont_write_bytecode = True  # noqa: E402 - no __pycache__ in the source tree
import json
import socket
import time


def connect(where):
    if where.startswith("/"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(where)
    else:
        host, port = where.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    s.settimeout(600)
    return s


def main():
    where, path, rcpts = sys.argv[1], sys.argv[2], sys.argv[3:]
    s = connect(where)
    f = s.makefile("rb")

    def reply():
        lines = []
        while True:
            line = f.readline().decode(errors="replace")
            if not line:
                return " | ".join(lines + ["(closed)"])
            lines.append(line.rstrip())
            if line[3:4] != "-":
                return " | ".join(lines)

    reply()
    s.sendall(b"LHLO bench.test\r\n")
    reply()
    t0 = time.monotonic()
    head = "MAIL FROM:<bench@source.test>\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts)
    s.sendall((head + "DATA\r\n").encode())
    for _ in range(len(rcpts) + 2):
        reply()
    sent = 0
    with open(path, "rb") as m:
        pending = b""
        while True:
            chunk = m.read(1 << 20)
            if not chunk:
                break
            data = pending + chunk
            cut = data.rfind(b"\n") + 1
            lines, pending = data[:cut], data[cut:]
            out = lines.replace(b"\r\n", b"\n").replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
            if out.startswith(b"."):
                out = b"." + out
            s.sendall(out)
            sent += len(out)
        if pending:
            s.sendall(pending + b"\r\n")
            sent += len(pending) + 2
    s.sendall(b".\r\n")
    replies = [reply() for _ in rcpts]
    seconds = time.monotonic() - t0
    s.sendall(b"QUIT\r\n")
    s.close()
    print(json.dumps({"replies": replies, "seconds": round(seconds, 3), "bytes": sent}))


if __name__ == "__main__":
    main()
