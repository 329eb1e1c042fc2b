#!/usr/bin/env python3
"""Writes the hand-made seed inputs of tests/fuzz/corpus/<target>/seed-*.

Run from anywhere: python3 tests/fuzz/make_seeds.py. Input layouts are
documented on the entry points in src/fuzzing.rs. Files the fuzzer found
(minimized) are kept beside the seeds under other names.
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# --- smtp_reply: [text limit/16-1][bytes per read] server bytes ---------
replies = {
    "ehlo": "220 mx.example.test ESMTP\r\n250-mx.example.test\r\n250-PIPELINING\r\n"
    "250-SIZE 10240000\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250-STARTTLS\r\n"
    "250-ENHANCEDSTATUSCODES\r\n250-AUTH PLAIN LOGIN\r\n250-AUTH=CRAM-MD5\r\n250 CHUNKING\r\n",
    "transaction": "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <u@example.test>: Recipient address rejected\r\n"
    "354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 4F2\r\n221 2.0.0 Bye\r\n",
    "multiline-4xx": "451-4.7.1 greylisted\r\n451-4.7.1 come back\r\n451 4.7.1 later\r\n",
    "garbage": "hello there\r\n220\r\n999 x\r\n2500 no\r\n250-a\n251 b\n000 zero\r\n",
    "mixed-codes": "250-first\r\n550-second\r\n421 4.4.2 last\r\n",
    "class-mismatch": "550 2.1.0 odd\r\n250 5.5.5 odder\r\n450 4.999.999 big\r\n",
    "controls": "250 ok\x00\x1b[31m\x7f\xff\xfe\r\n250-\r\r\n250 \r\n",
    "size-odd": "250-x\r\n250-SIZE -1\r\n250-SIZE 99999999999999999999999\r\n250 SIZE\r\n",
    "bare-lf": "220-a\n220-b\n220 c\n",
    "no-newline": "250 never ends",
}
for name, text in replies.items():
    write("smtp_reply", name, bytes([8, 7]) + text.encode("latin-1"))
write("smtp_reply", "tiny-limit-one-byte-reads",
      bytes([0, 1]) + ("250-" + "A" * 300 + "\r\n250 2.0.0 " + "B" * 300 + "\r\n").encode())
write("smtp_reply", "long-line", bytes([255, 255]) + b"250 " + b"x" * 3000 + b"\r\n")

# --- job_line: job protocol lines ---------------------------------------
base = {
    "id": "job-1",
    "sender": "sender@example.test",
    "recipients": [{"address": "rcpt@example.test"}],
    "message": {"data": "Subject: hi\r\n\r\nhello\r\n"},
}
jobs = {
    "minimal": base,
    "path": dict(base, message={"path": "/var/spool/mailhop/msg1"}),
    "full": dict(base, transport="smtp", nexthop="[192.0.2.1]:2525", envid="E1", ret="hdrs",
                 smtputf8=True, arrival_time=1700000000, cache={"load": True, "store": False},
                 recipients=[{"address": "a@example.test", "orcpt": "rfc822;a@example.test",
                              "notify": ["success", "failure", "delay"]},
                             {"address": "b@[192.0.2.7]", "notify": ["never"]}]),
    "lmtp-unix": dict(base, transport="lmtp", nexthop="unix:/run/dovecot/lmtp"),
    "lmtp-inet": dict(base, transport="lmtp", nexthop="inet:[127.0.0.1]:24"),
    "eightbit": dict(base, message={"data": "Subject: \u00e9t\u00e9\r\n\r\nd\u00e9j\u00e0\r\n.\r\n..\r\n"}),
    "arrival-max": dict(base, arrival_time=18446744073709551615),
    "never-and-more": dict(base, recipients=[{"address": "x@y", "notify": ["never", "success"]}]),
    "rcpt-domain-port": dict(base, recipients=[{"address": "u@[127.0.0.1]:6379"},
                                               {"address": "u@host:22"},
                                               {"address": "u@a.test,[192.0.2.5]"}]),
    "control-chars": dict(base, id="a\u0000b", sender="s\r\nRCPT TO:<evil@x>", nexthop="unix:/x\r\ny"),
    "no-recipients": dict(base, recipients=[]),
    "smtputf8-idn": dict(base, smtputf8=True, sender="s@b\u00fccher.test",
                         recipients=[{"address": "a@B\u00dcCHER.example"},
                                     {"address": "j\u00f6rg@example.test"},
                                     {"address": "x@b\u00fc--cher-.test"},
                                     {"address": "\"q@r\"@\u4f8b\u3048.\u30c6\u30b9\u30c8"}],
                         message={"data": "Subject: Gr\u00fc\u00dfe\r\n\r\nbody\r\n"}),
}
lines = [json.dumps(v) for v in jobs.values()]
for name, v in jobs.items():
    write("job_line", name, json.dumps(v) + "\n")
write("job_line", "several-lines", "\r\n".join(lines[:3]) + "\r\n\n   \n" + lines[3])
write("job_line", "status", '{"command":"status"}\n{"command":"status","x":1}\n{"command":7}\n')
write("job_line", "malformed", '{"id":"x",\n{"id":\n[]\nnull\n"str"\n{"id":"x","sender":"a","recipients":[{"address":"b"}],"message":{"path":"/p","data":"d"}}\n')
write("job_line", "unknown-field", json.dumps(dict(base, extra=1)) + "\n")
write("job_line", "duplicate-key", '{"id":"a","id":"b","sender":"","recipients":[{"address":"x@y"}],"message":{"data":""}}\n')
write("job_line", "deep-nesting", "[" * 200 + "]" * 200 + "\n" + '{"id":' + "[" * 300 + "\n")
write("job_line", "bad-utf8", b'{"id":"\xff\xfe","sender":"a"}\n')
write("job_line", "big-numbers", '{"id":"n","sender":"","recipients":[{"address":"x@y"}],"message":{"data":""},"arrival_time":-1}\n'
      '{"id":"n","sender":"","recipients":[{"address":"x@y"}],"message":{"data":""},"arrival_time":1e300}\n'
      '{"id":"n","sender":"","recipients":[{"address":"x@y"}],"message":{"data":""},"arrival_time":18446744073709551616}\n')
write("job_line", "too-long", "x" * 3000 + "\n" + lines[0] + "\n")

# --- nexthop: [bit 0 LMTP; rest: 0 port 25, 1 port 24, n port 516n] text ---
hops = {
    "domain": (0, "example.test"),
    "domain-port": (0, "example.test:2525"),
    "bracketed": (0, "[mx.example.test]:smtp"),
    "ipv4": (0, "[192.0.2.1]:2525"),
    "ipv6": (0, "[ipv6:2001:db8::1]:submission"),
    "ipv6-upper": (0, "[IPv6:::ffff:192.0.2.1]"),
    "bare-ip": (0, "192.0.2.1 2001:db8::2"),
    "list": (0, "mx1.example.test:relay, [10.0.0.1] ,,\t[ipv6:::1]:mail-alt"),
    "service-unknown": (0, "host:nosuchservice"),
    "ports-bad": (0, "host:0 host:65536 host:99999999999999999999 host:"),
    "brackets-bad": (0, "[ ]:25 [ [x]] ]: [x]:25:26 [x"),
    "rcpt-domain-forms": (0, "[127.0.0.1]:6379"),
    "lmtp-unix": (1, "unix:/run/dovecot/lmtp"),
    "lmtp-unix-relative": (1, "unix:lmtp"),
    "lmtp-unix-long": (1, "unix:/" + "d" * 200),
    "lmtp-unix-ctrl": (1, "unix:/run/x\r\nforged log line"),
    "lmtp-inet": (1, "inet:[127.0.0.1]:24, inet:host:lmtp unix:/x"),
    "lmtp-plain": (3, "host"),
    "empty": (0, " , \t"),
    "controls": (0, "a\x00b.test\x7f:\x1b25"),
    "unicode": (0, "b\u00fccher.example:25 [\u0661\u0662]"),
}
for name, (head, text) in hops.items():
    write("nexthop", name, bytes([head]) + text.encode())

# --- config: TOML text ----------------------------------------------------
with open(os.path.join(HERE, "..", "..", "conf", "mailhop.toml"), "rb") as f:
    write("config", "defaults", f.read())
configs = {
    "smtp-small": '[smtp]\nport = 2525\nrelayhost = "[192.0.2.1]:25"\nconnect_timeout = "30s"\n',
    "durations": '[smtp]\nhelo_timeout = "1h30m"\nmail_timeout = "0s"\nrcpt_timeout = "-5s"\ndata_done_timeout = "99999999999999999999d"\n',
    "types": '[smtp]\nport = "25"\n[dns]\ntimeout = 5\n[daemon]\nworkers = -1\n',
    "unknown": '[smtp]\nnope = 1\n[nope]\nx = 2\ntop = 3\n',
    "dns": '[dns]\nnameservers = ["127.0.0.1", "[::1]:5353", "bad", "1.2.3.4:99999"]\ninet_protocols = "ipv4, ipv6"\n',
    "tls": '[tls]\nsecurity_level = "may"\n[[tls.policy]]\nnexthop = "example.test"\nlevel = "encrypt"\n',
    "bad-syntax": '[smtp\nport = = 1\n"unterminated\n[[smtp]]\n',
    "table-types": 'smtp = 1\n[dns]\n[dns]\n',
    "inline-tables": 'smtp = { port = 2525, bind_address = "192.0.2.9", bind_address6 = "::1" }\n',
    "lmtp": '[lmtp]\nport = 24\nlhlo_timeout = "10s"\n[log]\nformat = "json"\n[cache]\nenabled = true\n',
}
for name, text in configs.items():
    write("config", name, text)


# --- dns_mx: [settings][rng seed] then (u16 length, datagram)* ----------
def name(n):
    out = b""
    for label in n.split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def rr(owner, rtype, ttl, rdata):
    return owner + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


MX, A, AAAA, CNAME, SOA = 15, 1, 28, 5, 6


def message(qname, qtype, answers=(), authority=(), rcode=0, flags=0x8180, ident=0x1234):
    head = struct.pack(">HHHHHH", ident, flags | rcode, 1, len(answers), len(authority), 0)
    body = name(qname) + struct.pack(">HH", qtype, 1)
    return head + body + b"".join(answers) + b"".join(authority)


def mx_rdata(pref, exch):
    return struct.pack(">H", pref) + name(exch)


def frame(*datagrams):
    return b"".join(struct.pack(">H", len(d)) + d for d in datagrams)


Q = b"\xc0\x0c"  # pointer to the question name
soa = rr(name("example.test"), SOA, 300, name("ns.example.test") + name("h.example.test") + struct.pack(">IIIII", 1, 2, 3, 4, 60))
mx_two = message("example.test", MX, [rr(Q, MX, 300, mx_rdata(10, "mx1.example.test")),
                                      rr(Q, MX, 300, mx_rdata(20, "mx2.example.test"))])
a1 = message("mx1.example.test", A, [rr(Q, A, 60, bytes([192, 0, 2, 10]))])
aaaa1 = message("mx1.example.test", AAAA, [rr(Q, AAAA, 60, bytes(15) + b"\x01")])
a2 = message("mx2.example.test", A, [rr(Q, A, 60, bytes([192, 0, 2, 1])), rr(Q, A, 60, bytes([127, 0, 0, 1]))])
aaaa2_nodata = message("mx2.example.test", AAAA, [], [soa])
write("dns_mx", "two-mx", bytes([0, 1]) + frame(mx_two, a1, aaaa1, a2, aaaa2_nodata))
write("dns_mx", "two-mx-own-address", bytes([0b1000, 2]) + frame(mx_two, a1, aaaa1, a2, aaaa2_nodata))
write("dns_mx", "two-mx-ipv4-only", bytes([0b01, 3]) + frame(mx_two, a1, a2))
null_mx = message("example.test", MX, [rr(Q, MX, 300, mx_rdata(0, ""))])
write("dns_mx", "null-mx", bytes([0, 0]) + frame(null_mx))
nx = message("example.test", MX, [], [soa], rcode=3)
write("dns_mx", "nxdomain", bytes([0, 0]) + frame(nx))
servfail = message("example.test", MX, rcode=2)
write("dns_mx", "servfail-ignore-error", bytes([0b1000000, 0]) + frame(servfail, a1, aaaa1))
nodata = message("example.test", MX, [], [soa])
host_a = message("example.test", A, [rr(Q, A, 60, bytes([198, 51, 100, 1]))])
write("dns_mx", "nodata-implicit-mx", bytes([0, 0]) + frame(nodata, host_a, message("example.test", AAAA)))
write("dns_mx", "host-route", bytes([0b10000000, 0]) + frame(host_a, message("example.test", AAAA, [rr(Q, AAAA, 0, bytes(16))])))
cname = message("example.test", MX, [rr(Q, CNAME, 300, name("alias.example.test")),
                                     rr(name("alias.example.test"), MX, 300, mx_rdata(5, "192.0.2.44"))])
write("dns_mx", "cname-literal-exchange", bytes([0, 0]) + frame(cname))
many = message("example.test", MX, [rr(Q, MX, 1, mx_rdata(i % 7, "m%d.example.test" % i)) for i in range(40)])
write("dns_mx", "many-mx", bytes([0b100000, 9]) + frame(many, a1))
truncated = message("example.test", MX, [rr(Q, MX, 300, mx_rdata(10, "mx1.example.test"))])[:-5]
write("dns_mx", "truncated", bytes([0, 0]) + frame(truncated))
mismatch = message("other.test", MX, [rr(Q, MX, 300, mx_rdata(10, "mx1.example.test"))], ident=7)
write("dns_mx", "wrong-question", bytes([0, 0]) + frame(mismatch))
loop = message("example.test", MX, [rr(Q, MX, 300, mx_rdata(10, "mx2.example.test"))])
write("dns_mx", "loop-to-self", bytes([0b1000, 0]) + frame(loop, a2, aaaa2_nodata))

# --- lmtp_data: [bytes per read - 1] the bytes after 354 ------------------
data_seeds = {
    "simple": b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
    "stuffed": b"..hidden\r\n.x\r\n. \r\n.\rX\r\n.\r\n",
    "bare-lf": b"a\nb\n.\nNOOP\n",
    "empty": b".\r\n",
    "unfinished": b"line\r\n.\r",
    "smuggling": b"a\r\n\n.\n\r.\r\r\n.\r\r\n.\n\r\nb\r\n.\r\n",
    "eight-bit": "Subject: caf\u00e9\r\n\r\n\u00fcber\r\n.\r\n".encode(),
    "long-line": b"x" * 3000 + b"\r\n.\r\n",
    # The published SMTP smuggling end-of-data variants, each followed by a
    # smuggled transaction: none may end the data before the real end.
    "smuggling-variants": b"a\n.\nMAIL FROM:<e@x>\r\nb\r.\rc\r\n.\rd\n.\r\ne\r.\nf\r\n.\ng\n.\rh\r.\r\n"
    b"RCPT TO:<v@y>\r\nDATA\r\n\r\n.\r\n",
    "bare-lf-then-crlf-dot": b"x\n.\r\nQUIT\r\ny\r\n.\r\n",
}
for i, (name, data) in enumerate(data_seeds.items()):
    write("lmtp_data", name, bytes([i * 37 % 256]) + data)

# --- tlsa: [RDATA length] RDATA, then two "certificates" (split at the middle)
write("tlsa", "dane-ee-spki-sha256", bytes([35, 3, 1, 1]) + bytes(range(32)) + b"\x30\x03\x02\x01\x00" * 2)
write("tlsa", "dane-ta-full", bytes([8, 2, 0, 0]) + b"\x30\x03\x02\x01" + b"\x30\x03\x02\x01")
write("tlsa", "pkix-ee", bytes([35, 1, 1, 1]) + bytes(32))
write("tlsa", "truncated", bytes([2, 3, 1]))

# --- message_facts: a message; its header may carry TLS-Required: No
write("message_facts", "tls-required-no", b"From: a@x.test\r\nTLS-Required: No\r\n\r\nbody\r\n")
write("message_facts", "folded", b"Subject: x\nTLS-Required:\n\tno\n\nbody")
write("message_facts", "in-body", b"Subject: x\r\n\r\nTLS-Required: No\r\n")
write("message_facts", "8bit", b"Subject: \xc3\xa9\r\nTLS-Required: yes\r\n\r\n\xff")
# ... and its wire form: stray CRs replaced, no smuggling sequence survives
write("message_facts", "smuggling", b"Subject: s\r\n\r\na\n.\nb\r.\rc\r\n.\rd\n.\r\ne\r.\nf\r\n.\ng\n.\r"
      b"MAIL FROM:<e@x>\r\n.\r")
write("message_facts", "utf8-header-only", "Subject: \u00fcber\n\nplain\r\r\n".encode())
write("message_facts", "utf8-body-only", "Subject: plain\r\n\r\n\u00fcber\r".encode())

# --- tlsrpt_record: TXT texts of _smtp._tls.<domain>, one per line
write("tlsrpt_record", "mailto", b"v=TLSRPTv1; rua=mailto:reports@example.com")
write("tlsrpt_record", "two-rua", b"v=TLSRPTv1;rua=mailto:a@example.com,https://reporting.example.com/v1/tlsrpt")
write("tlsrpt_record", "percent", b"v=TLSRPTv1; rua=mailto:tls%2Breports@example.com")
write("tlsrpt_record", "two-records", b"v=TLSRPTv1; rua=mailto:a@x.test\nv=TLSRPTv1; rua=mailto:b@x.test")
write("tlsrpt_record", "other-txt", b"v=spf1 -all\nv=TLSRPTv1; rua=mailto:a@x.test; ext=1")

# --- mta_sts_policy: a policy file (its lines are also read as TXT records)
write("mta_sts_policy", "rfc-enforce", "version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n")
write("mta_sts_policy", "crlf-testing", "version: STSv1\r\nmode: testing\r\nmx: MX.Example.COM.\r\nmax_age: 86400\r\n")
write("mta_sts_policy", "none-no-mx", "version: STSv1\nmode: none\nmax_age: 31557601\n")
write("mta_sts_policy", "unknown-keys", "version:STSv1\n\nfoo: bar\nmode:\tenforce \nmx: a.example\nmax_age: 9999999999\nmode: none\n")
write("mta_sts_policy", "bad-pattern", "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n")
write("mta_sts_policy", "txt-records", "v=STSv1; id=20160831085700Z;\nv=spf1 -all\nv=STSv1;id=x; ext=1\n")
write("mta_sts_policy", "not-utf8", b"version: STSv1\nmode: enforce\xff\n")

# --- mime_downgrade: [piece size][limits: bit 0 small, then nesting, boundary, header] message
mime = {
    "8bit-text": (7, 0, b"Subject: x\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\xc3\xbc\xc3\x9fe = 1 \n"),
    "multipart": (13, 0, b"Content-Type: multipart/mixed; boundary=\"b1\"\nContent-Transfer-Encoding: 8bit\n\npre\n--b1\nContent-Transfer-Encoding: binary\n\nt\xc3\xa9xt\n--b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nQUJD\n--b1--\nepi \xff\n"),
    "rfc822": (1, 0, b"Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\nSubject: \xe9\nContent-Transfer-Encoding: 8bit\n\ninner \xe9\n"),
    "digest-nested": (3, 0b10101011, b"Content-Type: multipart/digest; boundary=d (c)\n\n--d\n\nContent-Type: multipart/mixed; boundary=e\n\n--e\nContent-Type: multipart/mixed; boundary=f\n\n--f\nContent-Transfer-Encoding: 8bit\n\n\xe9\n--d--\n"),
    "long-line": (200, 0, b"Content-Transfer-Encoding: 8bit\n\n" + b"\xe9" * 5000 + b"\r\n" + b"a" * 80 + b" \n"),
    "garbage": (5, 0b11000001, b"Subject :a\n\tfolded\x00nul\nnot a header\r\n\r\x7f--x\n"),
}
for name, (piece, knobs, message) in mime.items():
    write("mime_downgrade", name, bytes([piece, knobs]) + message)

# --- sasl_exchange: [mechanism: 0 SCRAM-SHA-256, 1 PLAIN, 2 LOGIN] then the
# server's challenges separated by NUL (also read as a password table)
import base64 as _b64
write("sasl_exchange", "scram-rfc7677", b"\x00" +
      b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
      + b"\x00" + b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
write("sasl_exchange", "scram-bad-nonce", b"\x00r=other,s=QUJD,i=1\x00v=AAAA")
write("sasl_exchange", "scram-error", b"\x00e=invalid-proof")
write("sasl_exchange", "scram-huge-iterations", b"\x00r=rOprNGfwEbeRWgbNEkqOx,s=QUJD,i=999999999")
write("sasl_exchange", "login", b"\x02" + _b64.b64encode(b"Username:") + b"\x00" + _b64.b64encode(b"Password:") + b"\x00extra")
write("sasl_exchange", "plain-challenge", b"\x01nonempty")
write("sasl_exchange", "table", b"\x01# comment\n[mx.example.com]:587 user:pass\nexample.com u2:p:with:colons\nbad line\n")

# --- feed_replies: raw RESP bytes (RESP2 or RESP3), one Redis reply read as
# XREADGROUP, XAUTOCLAIM, XINFO GROUPS, XPENDING and HGETALL replies
def resp(v, resp3=False):
    """RESP encoding: bytes/str bulk, int, None nil, list array, dict map
    (RESP3; RESP2 writes its pairs flat), a (kind, payload) tuple verbatim."""
    if isinstance(v, tuple):
        return v[1] if v[0] == "raw" else b""
    if v is None:
        return b"_\r\n" if resp3 else b"$-1\r\n"
    if isinstance(v, int):
        return b":%d\r\n" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"$%d\r\n%s\r\n" % (len(v), v)
    if isinstance(v, dict):
        if resp3:
            return b"%%%d\r\n" % len(v) + b"".join(resp(k, resp3) + resp(x, resp3) for k, x in v.items())
        return resp([y for k, x in v.items() for y in (k, x)])
    return b"*%d\r\n" % len(v) + b"".join(resp(x, resp3) for x in v)


def raw(b):
    return ("raw", b)


job = json.dumps(base).encode()
e1 = ["1700000000000-0", ["job", job]]
e2 = ["1700000000001-0", ["job", job, "attempt", "2"]]
e3 = ["1700000000002-0", ["other", "x"]]
feed = {
    "xread-one-stream": resp([["mailhop:jobs", [e1, e2, e3]]]),
    "xread-several-streams": resp([["mailhop:jobs", [e1]], ["mailhop:bulk", [e2, e3]], ["third", []]]),
    "xread-resp3-map": resp({"mailhop:jobs": [e1, e2], "mailhop:bulk": [e3]}, resp3=True),
    "xread-nil-resp2": b"*-1\r\n",
    "xread-nil-resp3": b"_\r\n",
    "xread-empty": b"*0\r\n",
    "xread-empty-stream": resp([["mailhop:jobs", []]]),
    "xread-deleted-entry": resp([["mailhop:jobs", [["1-0", None], e1, None]]]),
    "xautoclaim-redis7": resp(["0-0", [e1, e2], ["1699999999999-0"]]),
    "xautoclaim-redis62-nil": resp(["1700000000005-0", [e1, None, ["3-0", None]]]),
    "xautoclaim-empty": resp(["0-0", [], []]),
    "xautoclaim-resp3": resp(["0-0", [e1], []], resp3=True),
    "odd-types": resp([[raw(b"+mailhop:jobs\r\n"),
                        [[raw(b"+5-0\r\n"), [raw(b"+job\r\n"), raw(b"+simple\r\n")]],
                         [7, ["job", 8]],
                         [raw(b"$2\r\n\xff\xfe\r\n"), ["job", "x"]],
                         ["6-0", ["job"]],
                         ["7-0", ["job", "a", "job", "b"]],
                         ["8-0", "not-an-array"],
                         ["9-0", ["job", "y"], "extra"]]]]),
    "resp3-types": (b"*2\r\n$4\r\njobs\r\n*4\r\n~2\r\n$3\r\n1-0\r\n*2\r\n$3\r\njob\r\n#t\r\n"
                    b"*2\r\n=7\r\ntxt:1-0\r\n*2\r\n$3\r\njob\r\n,1.5\r\n"
                    b"|1\r\n+ttl\r\n:3\r\n*2\r\n$3\r\n2-0\r\n*2\r\n$3\r\njob\r\n$1\r\nj\r\n"
                    b">2\r\n+message\r\n(12345678901234567890\r\n"),
    "error-reply": b"-NOGROUP No such key 'mailhop:jobs' or consumer group 'mailhop'\r\n",
    "blob-error": b"!21\r\nSYNTAX invalid syntax\r\n",
    "xinfo-groups-resp2": resp([["name", "mailhop", "consumers", 2, "pending", 3,
                                 "last-delivered-id", "1700000000002-0", "entries-read", 3, "lag", 0],
                                ["name", "other", "consumers", 0, "pending", 0,
                                 "last-delivered-id", "0-0", "entries-read", None, "lag", None]]),
    "xinfo-groups-resp3": resp([{"name": "mailhop", "consumers": 2, "pending": 3,
                                 "last-delivered-id": "1700000000002-0", "entries-read": 3, "lag": None}],
                               resp3=True),
    "xpending-summary": resp([3, "1700000000000-0", "1700000000002-0",
                              [["node-a", "2"], ["node-b", "1"]]]),
    "xpending-none": resp([0, None, None, None]),
    "hgetall-progress": resp(["0", json.dumps({"address": "rcpt@example.test", "status": "sent",
                                              "dsn": "2.0.0", "diagnostic": "250 ok"}),
                              "x", "{}"]),
    "hgetall-resp3": resp({"node-a": "3", "node-b": "1"}, resp3=True),
    "xlen": b":42\r\n",
    "nested-deep": b"*1\r\n" * 99 + b"*0\r\n",
}
for name, data in feed.items():
    write("feed_replies", name, data)
