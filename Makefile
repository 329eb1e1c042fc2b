# mailhop: build, test, lint, benchmark and install.
# "make test" installs the test peers first (scripts/install-test-deps.sh).

CARGO ?= cargo
DESTDIR ?=
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc/mailhop
MANDIR ?= $(PREFIX)/share/man
# systemd units: /usr/lib/systemd/system for a distribution-style PREFIX=/usr,
# else the administrator's /etc/systemd/system.
UNITDIR ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/systemd/system,/etc/systemd/system)
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d

# smtp-sink and smtp-source live in /usr/sbin, which is not in a non-root
# PATH on Debian.
export PATH := $(PATH):/usr/sbin:/sbin

.PHONY: all build deps audit test lint fuzz bench soak install uninstall clean

all: build

build:
	$(CARGO) build --release

deps:
	scripts/install-test-deps.sh

# The soak runs first, with 5,000 jobs on the debug build (the binary the
# integration tests use), so that cargo test's summary closes the output.
test: deps audit
	CARGO_TERM_COLOR=never $(CARGO) build
	MAILHOP=target/debug/mailhop JOBS=5000 SEED=$(SOAK_SEED) DURATION=600 python3 scripts/soak/soak.py
	CARGO_TERM_COLOR=never $(CARGO) test --all-targets

# RustSec advisories (offline database beside the checkout); fails on any.
audit:
	scripts/audit.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Coverage-guided fuzzing (tests/fuzz, docs/testing.md): each target
# for FUZZ_SECONDS (default 300), one at a time. "make test" only replays
# the committed corpora (tests/fuzz_corpora.rs).
fuzz:
	scripts/fuzz.sh

# Benchmarks against smtp-source and a private Postfix (docs/benchmarks.md).
# SCENARIOS="1 2 lat", REPS=N, QUICK=1 select and shrink the runs.
bench:
	scripts/bench/run.sh

# Fault-injection soak (docs/testing.md): the release daemon with the
# connection cache and job chaining against faulty SMTP/LMTP servers; exits
# non-zero on any lost, misdelivered, falsely bounced, unanswered or twice
# answered recipient. SOAK_JOBS, SOAK_SEED, SOAK_DURATION (seconds) tune it.
SOAK_JOBS ?= 100000
SOAK_SEED ?= 1
SOAK_DURATION ?= 1800
soak:
	$(CARGO) build --release
	JOBS=$(SOAK_JOBS) SEED=$(SOAK_SEED) DURATION=$(SOAK_DURATION) python3 scripts/soak/soak.py

# Run "make build" first (as the user who has cargo), then "sudo make install".
# Installs the binary, the man pages mailhop(8) and mailhop.toml(5), the
# configuration (only when absent), the systemd units (ExecStart rewritten
# to $(BINDIR) and $(SYSCONFDIR)), and the sysusers.d/tmpfiles.d files for
# the mailhop user and /run/mailhop. Nothing is started or enabled
# (docs/operations.md, section systemd).
install:
	@test -x target/release/mailhop || { echo "target/release/mailhop is missing: run 'make build' first" >&2; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSCONFDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	install -m755 target/release/mailhop $(DESTDIR)$(BINDIR)/
	install -m644 docs/man/mailhop.8 $(DESTDIR)$(MANDIR)/man8/mailhop.8
	install -m644 docs/man/mailhop.toml.5 $(DESTDIR)$(MANDIR)/man5/mailhop.toml.5
	test -e $(DESTDIR)$(SYSCONFDIR)/mailhop.toml || \
		install -m644 conf/mailhop.toml $(DESTDIR)$(SYSCONFDIR)/mailhop.toml
	sed -e 's|^ExecStart=/usr/local/bin/mailhop daemon --config /etc/mailhop/mailhop.toml$$|ExecStart=$(BINDIR)/mailhop daemon --config $(SYSCONFDIR)/mailhop.toml|' \
		conf/mailhop.service > $(DESTDIR)$(UNITDIR)/mailhop.service.tmp
	grep -qx 'ExecStart=$(BINDIR)/mailhop daemon --config $(SYSCONFDIR)/mailhop.toml' \
		$(DESTDIR)$(UNITDIR)/mailhop.service.tmp || \
		{ rm -f $(DESTDIR)$(UNITDIR)/mailhop.service.tmp; echo "conf/mailhop.service: ExecStart= not rewritten" >&2; exit 1; }
	chmod 644 $(DESTDIR)$(UNITDIR)/mailhop.service.tmp
	mv -f $(DESTDIR)$(UNITDIR)/mailhop.service.tmp $(DESTDIR)$(UNITDIR)/mailhop.service
	install -m644 conf/mailhop.socket $(DESTDIR)$(UNITDIR)/mailhop.socket
	install -m644 conf/mailhop.sysusers $(DESTDIR)$(SYSUSERSDIR)/mailhop.conf
	install -m644 conf/mailhop.tmpfiles $(DESTDIR)$(TMPFILESDIR)/mailhop.conf
	@echo "installed; to start the daemon (as root):"
	@echo "  systemd-sysusers $(SYSUSERSDIR)/mailhop.conf"
	@echo "  systemd-tmpfiles --create $(TMPFILESDIR)/mailhop.conf"
	@echo "  systemctl daemon-reload && systemctl enable --now mailhop.service"

# Removes what "make install" installed, except the configuration file and
# the mailhop user. Stop and disable the units first
# ("systemctl disable --now mailhop.service mailhop.socket").
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/mailhop
	rm -f $(DESTDIR)$(MANDIR)/man8/mailhop.8 $(DESTDIR)$(MANDIR)/man5/mailhop.toml.5
	rm -f $(DESTDIR)$(UNITDIR)/mailhop.service $(DESTDIR)$(UNITDIR)/mailhop.socket
	rm -f $(DESTDIR)$(SYSUSERSDIR)/mailhop.conf $(DESTDIR)$(TMPFILESDIR)/mailhop.conf

clean:
	$(CARGO) clean
