#!/usr/bin/env bash
# Installs what mailhop's tests and benchmarks need on Debian/Ubuntu:
#   postfix       smtp-sink and smtp-source, the test peers (the Postfix
#                 daemon itself is never started by this script)
#   dnsmasq-base  a local DNS server for the DNS/MX tests
#   time          /usr/bin/time, for peak RSS in the benchmarks
#   iproute2      ss(8), to find free ports
#   iptables      benchmark scenario 11 counts the connection attempts to its
#                 blackholed addresses with DROP rules' packet counters
#   libssl-dev    OpenSSL headers and pkg-config: mailhop's TLS links the
#   pkg-config    system OpenSSL (openssl crate)
#   systemd       systemd-analyze, systemd-sysusers and systemd-tmpfiles, to
#                 check the units in conf/ (installed only when missing; no
#                 systemd is started)
#   pflogsumm     Postfix log summarizer: mailhop's logs must parse with it
#   strace        to check that the daemon sets its socket's permissions
#                 without path-based chmod/chown (tests/hostile.rs)
#   python3       a second job client in tests/hostile.rs (SCM_RIGHTS,
#                 supplementary groups)
#   groff-base    groff and man, to check that the manual pages in docs/man
#   man-db        render without warnings (tests/man_pages.rs)
#   prometheus    promtool, to check the metrics endpoint's output
#                 (tests/metrics.rs; the Prometheus server is not started)
#   nsd           the DNSSEC lab of the DANE tests: nsd serves a signed zone,
#   unbound       unbound validates it (AD bit), ldns-signzone signs it and
#   ldnsutils     dig shows what they answer (tests/dane.rs)
#   bind9-dnsutils
#   socat         the fallback TLS front of the TLS benchmark (no C compiler)
#   dovecot-core  the SASL service of the private Postfix smtpd in the SASL
#                 tests (tests/sasl.rs; started privately, never as a
#                 system service)
#   redis-server  the Redis Streams feed's tests (tests/feed*.rs; each test
#                 starts its own server on loopback)
#   redis-tools   redis-cli, which builds the Redis Cluster of
#                 tests/feed_cluster.rs
# and checks that a Rust toolchain (cargo) is present.
#
# Idempotent: installs only what is missing, runs "apt-get update" only when
# something must be installed, and exits 0 when everything is present.
# Run as root, or as a user with sudo.
set -euo pipefail

say() { printf 'install-test-deps: %s\n' "$*"; }
die() { printf 'install-test-deps: error: %s\n' "$*" >&2; exit 1; }

# Finds a program in PATH or in the sbin directories (not in a non-root PATH
# on Debian).
find_prog() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    for dir in /usr/sbin /sbin /usr/bin /bin; do
        if [ -x "$dir/$name" ]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    return 1
}

# "package|what must exist|description": a check is a program name, or an
# absolute path that must be executable.
REQUIREMENTS=(
    "postfix|smtp-sink smtp-source|Postfix test peers (smtp-sink, smtp-source)"
    "dnsmasq-base|dnsmasq|dnsmasq, local DNS server for the DNS tests"
    "time|/usr/bin/time|/usr/bin/time, peak RSS measurement"
    "iproute2|ip ss|ip and ss"
    "redis-server|redis-server|redis-server, the Redis Streams feed's tests (issue 18)"
    "redis-tools|redis-cli|redis-cli, to build the Redis Cluster of tests/feed_cluster.rs"
    "iptables|iptables|iptables, to count SYNs to blackholed addresses (bench scenario 11)"
    "libssl-dev|/usr/include/openssl/ssl.h|OpenSSL headers, to build the openssl crate"
    "pkg-config|pkg-config|pkg-config, to find OpenSSL when building"
    "systemd|systemd-analyze systemd-sysusers systemd-tmpfiles|systemd-analyze and friends, to verify the systemd units"
    "pflogsumm|pflogsumm|pflogsumm, to check that mailhop's log lines parse as Postfix's"
    "strace|strace|strace, to check the socket's permissions are set without path calls"
    "python3|/usr/bin/python3|python3, a second job client for the hostile-client tests"
    "groff-base|groff|groff, to check that the manual pages render without warnings"
    "man-db|man|man, to read the manual pages in docs/man (man -l)"
    "prometheus|promtool|promtool, to check the output of the metrics endpoint"
    "nsd|nsd nsd-checkconf|nsd, the authoritative server of the DNSSEC lab"
    "unbound|unbound unbound-checkconf|unbound, the validating resolver of the DNSSEC lab"
    "ldnsutils|ldns-keygen ldns-signzone|ldns-keygen and ldns-signzone, to sign the lab's zone"
    "bind9-dnsutils|dig|dig, to look at the DNSSEC lab's answers"
    "socat|socat|socat, the fallback TLS front of the TLS benchmark"
    "dovecot-core|dovecot|Dovecot, the SASL service of Postfix smtpd in tests/sasl.rs"
)

missing=()
for req in "${REQUIREMENTS[@]}"; do
    IFS='|' read -r pkg checks what <<<"$req"
    ok=1
    found=()
    for check in $checks; do
        if [[ $check == /* ]]; then
            if [ -e "$check" ]; then found+=("$check"); else ok=0; fi
        elif path=$(find_prog "$check"); then
            found+=("$path")
        else
            ok=0
        fi
    done
    if [ "$ok" = 1 ]; then
        say "present: $pkg (${found[*]})"
    else
        say "missing: $pkg — $what"
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found; install these packages by hand: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        as_root() { "$@"; }
    elif command -v sudo >/dev/null 2>&1; then
        as_root() { sudo "$@"; }
        say "not root: using sudo"
    else
        die "not root and sudo not found; as root, run: $0"
    fi

    installing_postfix=0
    installing_prometheus=0
    installing_dovecot=0
    for pkg in "${missing[@]}"; do
        [ "$pkg" = postfix ] && installing_postfix=1
        [ "$pkg" = prometheus ] && installing_prometheus=1
        [ "$pkg" = dovecot-core ] && installing_dovecot=1
    done
    if [ "$installing_postfix" = 1 ]; then
        # No main.cf, no mail system configuration: we only want the tools.
        say "preseeding debconf: postfix/main_mailer_type = No configuration"
        echo "postfix postfix/main_mailer_type select No configuration" |
            as_root debconf-set-selections
    fi

    say "running apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    say "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"

    if [ "$installing_postfix" = 1 ]; then
        # The package may have started the mail system; tests start their
        # own smtp-sink and need no daemon. Harmless when nothing runs.
        if postfix_bin=$(find_prog postfix); then
            as_root "$postfix_bin" stop 2>/dev/null || true
            say "made sure the Postfix master daemon is not running"
        fi
    fi

    if [ "$installing_prometheus" = 1 ] && command -v systemctl >/dev/null 2>&1; then
        # Only promtool is wanted; the package may have started the server.
        as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
        say "made sure the Prometheus server is not running"
    fi

    if [ "$installing_dovecot" = 1 ] && command -v systemctl >/dev/null 2>&1; then
        # Tests start their own Dovecot; the package may have started one.
        as_root systemctl disable --now dovecot.service >/dev/null 2>&1 || true
        say "made sure the system Dovecot is not running"
    fi

    for pkg in "${missing[@]}"; do
        for req in "${REQUIREMENTS[@]}"; do
            IFS='|' read -r rpkg checks _ <<<"$req"
            [ "$rpkg" = "$pkg" ] || continue
            for check in $checks; do
                if [[ $check == /* ]]; then
                    [ -e "$check" ] || die "$pkg installed but $check is still missing"
                else
                    find_prog "$check" >/dev/null ||
                        die "$pkg installed but $check is still missing"
                fi
            done
        done
        say "installed: $pkg"
    done
else
    say "all system packages present; nothing to install"
fi

# Rust toolchain: never downloaded from here.
cargo_bin=""
if cargo_bin=$(command -v cargo 2>/dev/null); then
    :
elif [ -x "${HOME:-/nonexistent}/.cargo/bin/cargo" ]; then
    cargo_bin="$HOME/.cargo/bin/cargo"
elif [ -n "${SUDO_USER:-}" ]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6 || true)
    if [ -n "$user_home" ] && [ -x "$user_home/.cargo/bin/cargo" ]; then
        cargo_bin="$user_home/.cargo/bin/cargo"
    fi
fi
if [ -z "$cargo_bin" ]; then
    cat >&2 <<'MSG'
install-test-deps: error: cargo (the Rust toolchain) was not found.
Install it, then run this script again, either
  - from the distribution:  apt-get install cargo rustc
    (mailhop needs Rust 1.88 or later, which older distribution releases
    do not ship), or
  - with rustup, as described at https://rustup.rs/ (installs into ~/.cargo;
    add ~/.cargo/bin to PATH).
MSG
    exit 1
fi
cargo_version=$("$cargo_bin" --version 2>/dev/null || echo 'cargo version unknown')
say "present: cargo ($cargo_bin, $cargo_version)"
# The code uses edition 2024 let-chains: Rust 1.88 or later.
minor=$(printf '%s\n' "$cargo_version" | sed -n 's/^cargo 1\.\([0-9][0-9]*\)\..*/\1/p')
if [ -n "$minor" ] && [ "$minor" -lt 88 ]; then
    say "warning: $cargo_version is too old to build mailhop (needs Rust 1.88 or later); update it, e.g. with rustup"
fi
say "done"
