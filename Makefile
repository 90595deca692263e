# tresor: `make demo` runs the main job, `make test` runs every test.
# Both first install what a fresh Debian 12 machine lacks (`make deps`).

SHELL := /bin/bash
CARGO ?= cargo

# Debian packages the build, the demo and the tests need.
#   swtpm, swtpm-tools      software TPM and its certificate tooling (swtpm_setup, swtpm-localca)
#   libtss2-dev, pkg-config tpm2-tss libraries tss-esapi links against
#   tpm2-tools              interop oracle: tpm2_checkquote, tpm2_quote, tpm2_eventlog
#   pcscd, vsmartcard-vpcd, libpcsclite-dev   PC/SC stack that reads the emulated UICC
#   openssl                 interop oracle: `openssl verify` of the PKI
DEB_PACKAGES := swtpm swtpm-tools libtss2-dev pkg-config tpm2-tools \
                pcscd vsmartcard-vpcd libpcsclite-dev openssl ca-certificates

.PHONY: all deps build demo bench test check clean

all: build

deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

build: deps
	$(CARGO) build --release --bin tresor

# The debug build: it shares its artifacts with `make test`, and the demo is fast in it.
demo: deps
	$(CARGO) run --quiet --bin tresor -- demo

# Figures of docs/performance.md (release build).
bench: deps
	$(CARGO) build --release --bin tresor
	./target/release/tresor bench manufacture --runs 20
	./target/release/tresor bench quote --runs 30
	taskset -c 0 ./target/release/tresor bench appraisal

test: deps
	TRESOR_REQUIRE_PCSCD=1 $(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

check: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
