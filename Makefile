# mailhop: build, test, lint, benchmark and install.
# "make test" installs the test peers first (scripts/install-test-deps.sh).

CARGO ?= cargo
DESTDIR ?=
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc/mailhop

# smtp-sink and smtp-source live in /usr/sbin, which is not in a non-root
# PATH on Debian.
export PATH := $(PATH):/usr/sbin:/sbin

.PHONY: all build deps audit test lint bench install clean

all: build

build:
	$(CARGO) build --release

deps:
	scripts/install-test-deps.sh

test: deps audit
	CARGO_TERM_COLOR=never $(CARGO) test --all-targets

# RustSec advisories (offline database beside the checkout); fails on any.
audit:
	scripts/audit.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

bench:
	scripts/bench/large-message.sh

# Run "make build" first (as the user who has cargo), then "sudo make install".
install:
	@test -x target/release/mailhop || { echo "target/release/mailhop is missing: run 'make build' first" >&2; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSCONFDIR)
	install -m755 target/release/mailhop $(DESTDIR)$(BINDIR)/
	test -e $(DESTDIR)$(SYSCONFDIR)/mailhop.toml || \
		install -m644 conf/mailhop.toml $(DESTDIR)$(SYSCONFDIR)/mailhop.toml

clean:
	$(CARGO) clean
