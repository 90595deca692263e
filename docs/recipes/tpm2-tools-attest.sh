#!/usr/bin/env bash
# An attester built from tpm2-tools 5.4, curl and python3 (with cbor2, `pip install cbor2`),
# nothing of tresor's: it enrols a TPM's AK at a tresor PVA, is challenged, quotes, and gets
# an EAR. docs/recipes/tpm2-tools-attester.md explains each step; cli/tests/recipe_tpm2_tools.rs
# runs this file against a real `tresor serve pva` and swtpm.
#
# The PVA must know the EK (an EK certificate under its manufacturer roots, or the EK's name
# in its ek_allow_list: this recipe sends no certificate) and have an attestation-only
# policy that pins the PCR values (`bundle_key = "none"`, [pcr_values.sha256]), since
# tpm2_certify cannot certify a bundle key with the nonce and a plain TPM has no event log.
#
# Environment:
#   TPM2TOOLS_TCTI  the TPM (e.g. swtpm:path=/run/swtpm/tpm.sock, or swtpm:port=2321)
#   PVA             the PVA's base URL (https://pva.example:8440)
#   CA              PEM roots of the PVA's TLS certificate (the CI root)
#   CLIENT_CERT, CLIENT_KEY
#                   a relying party's certificate and key (role ro or operator): enrolment
#                   is for relying parties; challenges and appraisals are open
#   POLICY          the policy id to be appraised under
#   OUT             directory for the EAR (ear.cbor) and the intermediate files
set -euo pipefail
: "${PVA:?}" "${CA:?}" "${CLIENT_CERT:?}" "${CLIENT_KEY:?}" "${POLICY:?}" "${OUT:?}"
mkdir -p "$OUT" && cd "$OUT"

post() { # post PATH BODY-FILE [client certificate]: the JSON answer on stdout
  local auth=()
  [ "${3:-}" = auth ] && auth=(--cert "$CLIENT_CERT" --key "$CLIENT_KEY")
  curl --silent --show-error --fail-with-body --cacert "$CA" "${auth[@]}" \
       -H 'content-type: application/json' --data-binary "@$2" "$PVA$1"
}
py() { python3 -c "$@"; }

# 1. The EK (TCG default ECC template) and an AK: a restricted ECDSA P-256 signing key.
#    Without a resource manager each tool leaves its objects loaded: flush them after each
#    (`-t`: every transient object), the context files keep them.
tpm2_createek -c ek.ctx -G ecc -u ek.pub && tpm2_flushcontext -t
tpm2_createak -C ek.ctx -c ak.ctx -G ecc -g sha256 -s ecdsa -u ak.pub -n ak.name > /dev/null
tpm2_flushcontext -t
tpm2_readpublic -c ek.ctx -n ek.name > /dev/null && tpm2_flushcontext -t

# 2. Enrol: the PVA answers a credential only this TPM's EK can open, bound to the AK's name.
#    Its messages take TPMT_PUBLIC (tpm2-tools writes TPM2B_PUBLIC: skip the 2-byte size)
#    and bytes as base64url without padding.
py '
import base64, json
b = lambda f, skip=0: base64.urlsafe_b64encode(open(f, "rb").read()[skip:]).rstrip(b"=").decode()
json.dump({"device_id": open("ek.name", "rb").read().hex(), "ek_certificate": "",
           "ek_public": b("ek.pub", 2), "ak_public": b("ak.pub", 2)}, open("enrol.json", "w"))'
post /v1/enrol enrol.json auth > credential.json

# 3. TPM2_ActivateCredential, in the EK's PolicySecret(TPM_RH_ENDORSEMENT) session. The
#    credential file is tpm2-tools' own: magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
py '
import base64, json, struct
c = json.load(open("credential.json"))
d = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
blob, secret = d(c["credential_blob"]), d(c["encrypted_secret"])
open("cred.bin", "wb").write(struct.pack(">IIH", 0xBADCC0DE, 1, len(blob)) + blob
                             + struct.pack(">H", len(secret)) + secret)'
tpm2_startauthsession --policy-session -S session.ctx
tpm2_policysecret -S session.ctx -c e > /dev/null
tpm2_activatecredential -c ak.ctx -C ek.ctx -i cred.bin -o secret.bin -P session:session.ctx
tpm2_flushcontext session.ctx && tpm2_flushcontext -t
py '
import base64, json
c = json.load(open("credential.json"))
s = base64.urlsafe_b64encode(open("secret.bin", "rb").read()).rstrip(b"=").decode()
json.dump({"device_id": c["device_id"], "ak_name": c["ak_name"], "secret": s}, open("activate.json", "w"))'
post /v1/activate activate.json auth > activated.json

# 4. A challenge: a fresh nonce, and the PCRs the policy wants quoted.
py "
import json
json.dump({'device_id': open('ek.name', 'rb').read().hex(), 'policy_id': '$POLICY'}, open('challenge.json', 'w'))"
post /v1/challenge challenge.json > nonce.json
NONCE=$(py 'import json; print(json.load(open("nonce.json"))["nonce"])')
PCRS=$(py 'import json; print(json.load(open("nonce.json"))["pcr_selection"])')

# 5. The quote over those PCRs with the nonce as qualifying data, and the PCR values it
#    digests (tpm2_pcrread writes them one after the other, in selection order).
tpm2_quote -c ak.ctx -l "$PCRS" -q "$NONCE" -g sha256 -m quote.msg -s quote.sig > /dev/null
tpm2_flushcontext -t
tpm2_pcrread "$PCRS" -o pcrs.bin > /dev/null

# 6. The evidence (CBOR, docs/evidence.md), carried base64url in a JSON appraisal request.
py "
import base64, cbor2, hashlib, json
pcrs = {}
raw = open('pcrs.bin', 'rb').read()
size = {'sha1': 20, 'sha256': 32, 'sha384': 48, 'sha512': 64}
for part in '$PCRS'.split('+'):
    bank, numbers = part.split(':')
    for n in sorted(int(x) for x in numbers.split(',')):
        pcrs.setdefault(bank, {})[n], raw = raw[:size[bank]], raw[size[bank]:]
evidence = {
    'version': 1,
    'device_id': open('ek.name', 'rb').read(),
    'ek_certificate': b'',
    'ak_public': open('ak.pub', 'rb').read()[2:],
    'quote': {'attest': open('quote.msg', 'rb').read(), 'signature': open('quote.sig', 'rb').read()},
    'event_log': b'',
    'pcr_values': pcrs,
    'rollback_counter': 0,
}
e = base64.urlsafe_b64encode(cbor2.dumps(evidence)).rstrip(b'=').decode()
json.dump({'evidence': e}, open('appraise.json', 'w'))"
post /v1/appraise appraise.json > appraisal.json

# 7. The EAR (COSE_Sign1, draft-ietf-rats-ear), saved for the relying party.
py '
import base64, json
a = json.load(open("appraisal.json"))
open("ear.cbor", "wb").write(base64.urlsafe_b64decode(a["ear"] + "=" * (-len(a["ear"]) % 4)))
print("status", a["status"], "failed checks", a["failed_checks"] or "none")'
