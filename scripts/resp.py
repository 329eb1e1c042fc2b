"""A minimal RESP2 client (standard library only) for the benchmark's and
the soak's Redis peers: pipelined commands, replies read back. An error
reply comes back as its text (str), a bulk string as bytes, nil as None.
Connection errors raise OSError (ValueError for a reply it cannot read)."""

import socket


class Resp:
    def __init__(self, port, host="127.0.0.1", timeout=None):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.f = self.s.makefile("rb")

    def close(self):
        for c in (self.f, self.s):
            try:
                c.close()
            except OSError:
                pass

    @staticmethod
    def encode(cmds):
        out = bytearray()
        for args in cmds:
            out += b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
        return bytes(out)

    def send_encoded(self, out, count):
        self.s.sendall(out)
        return [self.reply() for _ in range(count)]

    def send(self, cmds):
        return self.send_encoded(self.encode(cmds), len(cmds))

    def reply(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise OSError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind in (b"+", b"-"):
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.f.read(size + 2)
            if len(data) != size + 2:
                raise OSError("connection closed")
            return data[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.reply() for _ in range(size)]
        raise ValueError(f"bad RESP reply {line!r}")
