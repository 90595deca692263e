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
#   python3, python3-venv   interop oracle: pycose, an independent COSE implementation
#   postgresql              the PostgreSQL server binaries (initdb, postgres, pg_ctl) for the
#                           stores several PVA and RO instances share; the tests and the lab
#                           start private servers of their own (storage::pg_server), never
#                           the system's cluster
DEB_PACKAGES := swtpm swtpm-tools libtss2-dev pkg-config tpm2-tools \
                pcscd vsmartcard-vpcd libpcsclite-dev openssl ca-certificates \
                python3 python3-venv postgresql

# pycose for the COSE interop tests, in a virtual environment of the project's own
# (pycose 1.1 cannot read what cbor2 6 decodes, hence the pin), and openapi-spec-validator,
# which checks the roles' OpenAPI documents (tests/tests/openapi_docs.rs).
PYVENV := $(CURDIR)/target/pyvenv
PYCOSE := pycose==1.1.0 'cbor2<6' openapi-spec-validator
export TRESOR_COSE_PYTHON := $(PYVENV)/bin/python

.PHONY: all deps build demo bench test soak check fuzz clean

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
	@$(PYVENV)/bin/python -c 'import pycose, cbor2, openapi_spec_validator' 2>/dev/null || { \
	  echo "make deps: installing pycose into $(PYVENV)"; \
	  /usr/bin/python3 -m venv $(PYVENV) && \
	  $(PYVENV)/bin/pip install -q --disable-pip-version-check $(PYCOSE); }

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
	./target/release/tresor bench fleet --devices 10,100,1000 --processes

# The seeded soak runs on its own, so that its seed and figures are printed.
SOAK := a_seeded_soak_of_random_kills

test: deps
	TRESOR_REQUIRE_PCSCD=1 TRESOR_REQUIRE_INTEROP=1 $(CARGO) test --workspace --all-targets -- --skip $(SOAK)
	# The end-to-end suites again with the PVA's and the RO's stores on PostgreSQL (issue 15).
	TRESOR_LAB_DATABASE=postgres $(CARGO) test -p tresor-tests
	$(CARGO) test -p tresor --test crash_safety $(SOAK) -- --nocapture
	$(CARGO) test --workspace --doc

# A longer soak of random kills (docs/flow.md, "Crash safety"); SOAK_SEED repeats a run.
SOAK_KILLS ?= 200
SOAK_DEVICES ?= 20
soak: deps
	TRESOR_SOAK_KILLS=$(SOAK_KILLS) TRESOR_SOAK_DEVICES=$(SOAK_DEVICES) $(if $(SOAK_SEED),TRESOR_SOAK_SEED=$(SOAK_SEED)) \
	  $(CARGO) test -p tresor --test crash_safety $(SOAK) -- --nocapture

check: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every fuzz target for FUZZ_SECONDS (default 600) each; not part of `make test`: it needs a
# nightly toolchain and cargo-fuzz, installed here on first use. See docs/fuzzing.md.
fuzz: deps
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	fuzz/run

clean:
	$(CARGO) clean
