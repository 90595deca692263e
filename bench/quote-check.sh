#!/usr/bin/env bash
# Quote checks per second, side by side on one core: tresor's `verifier::checkquote`
# (`tresor bench quote-check`) and Keylime's `keylime.tpm.tpm_util.checkquote`, on the same
# quote files made by tpm2-tools against a fresh swtpm (tpm2_quote's message, signature and
# PCR file, the AK public key as PEM): ECC P-256 AK, ECDSA with SHA-256, PCRs
# sha256:0,2,4,8,9. Each side does, per check, what a verifier does with a quote it
# receives: parse the AK's PEM, verify the signature, compare the nonce, recompute the PCR
# digest from the PCR file.
#
# Keylime (`keylime==7.14.*` from PyPI, or KEYLIME_VERSION) is installed into a virtual
# environment under the cargo target directory. Its PyPI package declares no dependencies
# (they live in its requirements.txt); the two that `tpm_util` imports are installed with
# it: cryptography and PyYAML.
#
# Usage: bench/quote-check.sh            (from anywhere; builds tresor if needed)
# Environment: CARGO_TARGET_DIR, TRESOR (a tresor binary), KEYLIME_VENV, KEYLIME_VERSION,
#              RUN_SECONDS (per measured loop, default 3), CPU (default 0), RUNS (default 3)
set -euo pipefail

cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
TRESOR=${TRESOR:-$TARGET/release/tresor}
VENV=${KEYLIME_VENV:-$TARGET/keylime-venv}
KEYLIME_VERSION=${KEYLIME_VERSION:-7.14.*}
RUN_SECONDS=${RUN_SECONDS:-3}
CPU=${CPU:-0}
RUNS=${RUNS:-3}

for tool in swtpm tpm2_startup tpm2_createek tpm2_createak tpm2_pcrextend tpm2_quote taskset python3; do
  command -v "$tool" >/dev/null || { echo "quote-check: $tool is missing (make deps)" >&2; exit 1; }
done

if [ ! -x "$TRESOR" ]; then
  echo "quote-check: building tresor (release)" >&2
  cargo build --release --quiet --bin tresor
fi

if ! "$VENV/bin/python" -c 'import keylime.tpm.tpm_util' 2>/dev/null; then
  echo "quote-check: installing keylime==$KEYLIME_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "keylime==$KEYLIME_VERSION" cryptography pyyaml
fi
KEYLIME_INSTALLED=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("keylime"))')
CRYPTOGRAPHY_INSTALLED=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("cryptography"))')

work=$(mktemp -d)
swtpm_pid=""
cleanup() {
  if [ -n "$swtpm_pid" ]; then kill "$swtpm_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A swtpm on a free pair of TCP ports, started on an empty state (TPM2_Startup(CLEAR) by
# swtpm itself).
port=$(python3 -c '
import socket
for p in range(23000, 24000, 2):
    try:
        a, b = socket.socket(), socket.socket()
        a.bind(("127.0.0.1", p)); b.bind(("127.0.0.1", p + 1))
        a.close(); b.close(); print(p); break
    except OSError:
        pass
')
mkdir -p "$work/tpm"
swtpm socket --tpm2 --tpmstate "dir=$work/tpm" \
  --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
  --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
  --flags not-need-init,startup-clear --pid "file=$work/swtpm.pid" &
swtpm_pid=$!
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$port"
for _ in $(seq 100); do
  [ -s "$work/swtpm.pid" ] && tpm2_getrandom 1 >/dev/null 2>&1 && break
  sleep 0.05
done

cd "$work"
# No resource manager between tpm2-tools and swtpm: flush what each command leaves loaded.
flush() { tpm2_flushcontext -t; tpm2_flushcontext -s; }
tpm2_createek -Q -c ek.ctx -G ecc -u ek.pub; flush
tpm2_createak -Q -C ek.ctx -c ak.ctx -G ecc -g sha256 -s ecdsa -u ak.pem -f pem -n ak.name; flush
for pcr in 0 2 4 8 9; do
  tpm2_pcrextend "$pcr:sha256=$(printf 'tresor bench pcr %s' "$pcr" | sha256sum | cut -c1-64)"
done
# Keylime's nonces are text (20 alphanumeric characters); its checkquote compares the
# quote's qualifying data with their UTF-8 bytes. tresor takes the same bytes in hex.
NONCE=tresorbenchkeylime20
NONCE_HEX=$(printf '%s' "$NONCE" | od -An -tx1 | tr -d ' \n')
tpm2_quote -Q -c ak.ctx -l sha256:0,2,4,8,9 -g sha256 -q "$NONCE_HEX" \
  -m quote.msg -s quote.sig -o quote.pcrs; flush
cd - >/dev/null

keylime_run() {
  taskset -c "$CPU" "$VENV/bin/python" - "$work" "$NONCE" "$RUN_SECONDS" <<'PY'
import json, logging, sys, time
logging.disable(logging.CRITICAL)
from keylime.tpm import tpm_util

work, nonce, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
read = lambda name: open(f"{work}/{name}", "rb").read()
ak, msg, sig, pcrs = read("ak.pem"), read("quote.msg"), read("quote.sig"), read("quote.pcrs")
check = lambda n: tpm_util.checkquote(ak, n, sig, msg, pcrs, "sha256")
check(nonce)  # must check out
try:
    check("another nonce of 20ch")
    sys.exit("keylime accepted a quote with another nonce")
except Exception:
    pass
count, start = 0, time.perf_counter()
while True:
    for _ in range(16):
        check(nonce)
    count += 16
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
        break
print(json.dumps({"us_per_check": elapsed * 1e6 / count, "checks_per_s": count / elapsed}))
PY
}

tresor_args=(--ak "$work/ak.pem" --msg "$work/quote.msg" --sig "$work/quote.sig"
             --pcrs "$work/quote.pcrs" --nonce "$NONCE_HEX" -g sha256)
"$TRESOR" pva check-quote "${tresor_args[@]}" >/dev/null
if "$TRESOR" pva check-quote "${tresor_args[@]/$NONCE_HEX/00$NONCE_HEX}" >/dev/null 2>&1; then
  echo "quote-check: tresor accepted a quote with another nonce" >&2; exit 1
fi
tresor_run() {
  taskset -c "$CPU" "$TRESOR" bench quote-check --json --seconds "$RUN_SECONDS" "${tresor_args[@]}"
}

field() { python3 -c "import json,sys; print(round(json.load(sys.stdin)['$1'], 1))"; }

echo "quote check, ECC P-256 AK (ECDSA, SHA-256), PCRs sha256:0,2,4,8,9, one core (CPU $CPU)"
echo "keylime $KEYLIME_INSTALLED (cryptography $CRYPTOGRAPHY_INSTALLED) vs $("$TRESOR" --version 2>/dev/null || echo tresor)"
printf '%-5s %18s %18s %8s\n' run "keylime µs/check" "tresor µs/check" ratio
for run in $(seq "$RUNS"); do
  k=$(keylime_run | field us_per_check)
  t=$(tresor_run | field us_per_check)
  printf '%-5s %18s %18s %8s\n' "$run" "$k" "$t" "$(python3 -c "print(f'{$k / $t:.2f}x')")"
done
