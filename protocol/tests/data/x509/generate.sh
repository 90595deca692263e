#!/bin/sh
# Regenerates the RSA fixtures of protocol/src/x509_tests.rs with OpenSSL 3 (rcgen with ring
# cannot create RSA keys or RSASSA-PSS signatures). Validity: 100 years from generation;
# the tests verify at a fixed time inside it. Private keys are discarded.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/ext.cnf" <<CNF
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[int]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
CNF
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$tmp/root.key" 2>/dev/null
openssl req -new -x509 -key "$tmp/root.key" -subj "/CN=tresor test RSA root" -days 36500 \
  -sha256 -extensions ca -config "$tmp/ext.cnf" -out rsa-root.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/int.key" 2>/dev/null
openssl req -new -key "$tmp/int.key" -subj "/CN=tresor test RSA-PSS intermediate" -out "$tmp/int.csr"
openssl x509 -req -in "$tmp/int.csr" -CA rsa-root.pem -CAkey "$tmp/root.key" -set_serial 2 \
  -days 36500 -sha384 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:48 \
  -extfile "$tmp/ext.cnf" -extensions int -out rsa-pss-int.pem 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/leaf.key"
openssl req -new -key "$tmp/leaf.key" -subj "/CN=leaf pss-sha512" -out "$tmp/leaf.csr"
openssl x509 -req -in "$tmp/leaf.csr" -CA rsa-pss-int.pem -CAkey "$tmp/int.key" -set_serial 3 \
  -days 36500 -sha512 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:64 \
  -extfile "$tmp/ext.cnf" -extensions leaf -out leaf-pss-sha512.pem 2>/dev/null
openssl x509 -req -in "$tmp/leaf.csr" -CA rsa-pss-int.pem -CAkey "$tmp/int.key" -set_serial 4 \
  -days 36500 -sha384 -extfile "$tmp/ext.cnf" -extensions leaf -out leaf-pkcs1-sha384.pem 2>/dev/null
openssl x509 -req -in "$tmp/leaf.csr" -CA rsa-pss-int.pem -CAkey "$tmp/int.key" -set_serial 5 \
  -days 36500 -sha1 -extfile "$tmp/ext.cnf" -extensions leaf -out leaf-pkcs1-sha1.pem 2>/dev/null
openssl x509 -req -in "$tmp/leaf.csr" -CA rsa-pss-int.pem -CAkey "$tmp/int.key" -set_serial 6 \
  -days 36500 -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:20 \
  -extfile "$tmp/ext.cnf" -extensions leaf -out leaf-pss-sha256-salt20.pem 2>/dev/null
