#!/usr/bin/env python3
"""Independent COSE implementation (pycose, https://github.com/TimothyClaeys/pycose) for
tresor's bundle interop test (protocol/tests/bundle_interop.rs).

Reads one JSON request on stdin and writes one JSON answer on stdout; byte strings are hex.
Requests:
  {"op": "verify_sign1", "cose"}                     -> {"payload"}   (key from the x5chain leaf)
  {"op": "sign1", "payload", "key_pem", "x5chain": [..]} -> {"cose"}   (low-S signature)
  {"op": "decrypt", "cose", "key_pem", "external_aad"} -> {"plaintext", "device_id", "ear_hash"}
  {"op": "encrypt", "plaintext", "x", "y", "device_id", "ear_hash", "external_aad"} -> {"cose"}
  {"op": "probe"}                                     -> {"pycose": version}
Errors go to stderr with exit status 1.

Requires: pycose and cbor2 < 6 (pip install pycose 'cbor2<6'; tested with pycose 1.1.0, cbor2
5.9.0, cryptography 46): cbor2 6 decodes arrays inside tags as tuples, which pycose 1.1.0
rejects ("Bytes cannot be decoded as COSE message").
"""

import json
import os
import sys

import cbor2

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pycose import headers
from pycose.algorithms import A256GCM, Es256, EcdhEsHKDF256
from pycose.keys import CoseKey, EC2Key
from pycose.keys.ec2 import EC2KpD
from pycose.keys.curves import P256
from pycose.messages import CoseMessage, EncMessage, Sign1Message
from pycose.messages.recipient import DirectKeyAgreement

HEADER_DEVICE_ID = -65537
HEADER_EAR_HASH = -65538

# The order of the P-256 group (SEC 2 section 2.4.2).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def unhex(s):
    return bytes.fromhex(s)


def verify_sign1(req):
    msg = CoseMessage.decode(unhex(req["cose"]))
    assert isinstance(msg, Sign1Message), type(msg)
    assert msg.phdr[headers.Algorithm] == Es256, msg.phdr
    chain = msg.phdr[headers.X5chain]
    leaf = chain if isinstance(chain, bytes) else chain[0]
    cert = x509.load_der_x509_certificate(leaf)
    pem = cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    msg.key = CoseKey.from_pem_public_key(pem)
    if not msg.verify_signature():
        raise SystemExit("signature does not verify")
    return {"payload": msg.payload.hex()}


def sign1(req):
    chain = [unhex(c) for c in req["x5chain"]]
    msg = Sign1Message(
        phdr={headers.Algorithm: Es256, headers.X5chain: chain[0] if len(chain) == 1 else chain},
        payload=unhex(req["payload"]),
    )
    msg.key = CoseKey.from_pem_private_key(req["key_pem"])
    return {"cose": low_s(msg.encode(tag=True)).hex()}


def low_s(encoded):
    """The COSE_Sign1 with s replaced by n - s when s > n / 2. OpenSSL (behind pycose)
    leaves s as it comes; tresor verifies the low-S form only (protocol/src/es256.rs), as
    any signer for tresor must produce it."""
    tagged = cbor2.loads(encoded)
    protected, unprotected, payload, signature = tagged.value
    r, s = signature[:32], int.from_bytes(signature[32:], "big")
    if s > P256_N // 2:
        s = P256_N - s
    signature = r + s.to_bytes(32, "big")
    return cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, signature]))


def decrypt(req):
    msg = CoseMessage.decode(unhex(req["cose"]))
    assert isinstance(msg, EncMessage), type(msg)
    assert msg.phdr[headers.Algorithm] == A256GCM, msg.phdr
    msg.external_aad = unhex(req["external_aad"])
    (recipient,) = msg.recipients
    assert recipient.phdr[headers.Algorithm] == EcdhEsHKDF256, recipient.phdr
    recipient.key = CoseKey.from_pem_private_key(req["key_pem"])
    plaintext = msg.decrypt(recipient)
    return {
        "plaintext": plaintext.hex(),
        "device_id": msg.phdr[HEADER_DEVICE_ID].hex(),
        "ear_hash": msg.phdr[HEADER_EAR_HASH].hex(),
    }


def encrypt(req):
    receiver = EC2Key(crv=P256, x=unhex(req["x"]), y=unhex(req["y"]))
    # pycose derives the CEK before it would generate the ephemeral key itself, so make it
    # here and publish its public part (RFC 9053 §6.3.1, header -1).
    ephemeral = EC2Key.generate_key(crv=P256)
    public = dict(ephemeral)
    del public[EC2KpD]
    recipient = DirectKeyAgreement(
        phdr={headers.Algorithm: EcdhEsHKDF256}, uhdr={headers.EphemeralKey: public}
    )
    recipient.key = ephemeral
    recipient.local_attrs = {headers.StaticKey: receiver}
    msg = EncMessage(
        phdr={
            headers.Algorithm: A256GCM,
            HEADER_DEVICE_ID: unhex(req["device_id"]),
            HEADER_EAR_HASH: unhex(req["ear_hash"]),
        },
        uhdr={headers.IV: os.urandom(12)},
        payload=unhex(req["plaintext"]),
        recipients=[recipient],
    )
    msg.external_aad = unhex(req["external_aad"])
    return {"cose": msg.encode(tag=True).hex()}


def probe(_req):
    from importlib.metadata import version

    return {n: version(n) for n in ("pycose", "cbor2", "cryptography")}


def main():
    req = json.load(sys.stdin)
    ops = {
        "verify_sign1": verify_sign1,
        "sign1": sign1,
        "decrypt": decrypt,
        "encrypt": encrypt,
        "probe": probe,
    }
    try:
        answer = ops[req["op"]](req)
    except SystemExit:
        raise
    except Exception as e:  # report, do not dump a traceback into the Rust test output
        print(f"{req.get('op')}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
