//! Property tests of the TPM codec: no parser panics or over-allocates on any input, and
//! every structure survives marshal → unmarshal unchanged.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;

use protocol::tpm::HashAlg;
use protocol::tpm::attest::{Attest, Attested, CertifyInfo, ClockInfo, QuoteInfo};
use protocol::tpm::credential::MadeCredential;
use protocol::tpm::error::PcrError;
use protocol::tpm::pcr::{BankSelection, PcrSelection, PcrValues};
use protocol::tpm::public::{
    EccCurve, EccParms, EccPoint, EccScheme, KdfScheme, ObjectAttributes, Public, PublicKey,
    RsaParms, RsaScheme, SymAlgorithm, SymDefObject, SymMode,
};
use protocol::tpm::signature::Signature;
use protocol::tpm::spki::Spki;
use protocol::tpm::tools::{QuotePcrs, read_pcr_values};
use protocol::tpm::wire::{Marshal, Tpm2b, Unmarshal};

fn hash() -> impl Strategy<Value = HashAlg> {
    prop::sample::select(HashAlg::ALL.to_vec())
}

fn tpm2b<const MAX: usize>() -> impl Strategy<Value = Tpm2b<MAX>> {
    prop::collection::vec(any::<u8>(), 0..=MAX).prop_map(|v| Tpm2b::new(v).unwrap())
}

fn attributes() -> impl Strategy<Value = ObjectAttributes> {
    prop::collection::vec(
        prop::sample::select(ObjectAttributes::NAMED.map(|(a, _)| a).to_vec()),
        0..8,
    )
    .prop_map(|bits| bits.into_iter().fold(ObjectAttributes::empty(), |a, b| a | b))
}

fn symmetric() -> impl Strategy<Value = SymDefObject> {
    prop_oneof![
        Just(SymDefObject::Null),
        (
            prop::sample::select(vec![
                SymAlgorithm::Aes,
                SymAlgorithm::Sm4,
                SymAlgorithm::Camellia
            ]),
            any::<u16>(),
            prop::sample::select(vec![
                SymMode::Ctr,
                SymMode::Ofb,
                SymMode::Cbc,
                SymMode::Cfb,
                SymMode::Ecb,
                SymMode::Null
            ]),
        )
            .prop_map(|(algorithm, key_bits, mode)| SymDefObject::Cipher {
                algorithm,
                key_bits,
                mode
            }),
    ]
}

fn rsa_scheme() -> impl Strategy<Value = RsaScheme> {
    prop_oneof![
        Just(RsaScheme::Null),
        Just(RsaScheme::Rsaes),
        hash().prop_map(RsaScheme::Rsassa),
        hash().prop_map(RsaScheme::Rsapss),
        hash().prop_map(RsaScheme::Oaep),
    ]
}

fn ecc_scheme() -> impl Strategy<Value = EccScheme> {
    prop_oneof![
        Just(EccScheme::Null),
        hash().prop_map(EccScheme::Ecdsa),
        hash().prop_map(EccScheme::Ecdh),
        (hash(), any::<u16>()).prop_map(|(hash, count)| EccScheme::Ecdaa { hash, count }),
        hash().prop_map(EccScheme::Sm2),
        hash().prop_map(EccScheme::Ecschnorr),
        hash().prop_map(EccScheme::Ecmqv),
    ]
}

fn kdf() -> impl Strategy<Value = KdfScheme> {
    prop_oneof![
        Just(KdfScheme::Null),
        hash().prop_map(KdfScheme::Mgf1),
        hash().prop_map(KdfScheme::Kdf1Sp800_56a),
        hash().prop_map(KdfScheme::Kdf2),
        hash().prop_map(KdfScheme::Kdf1Sp800_108),
    ]
}

fn public() -> impl Strategy<Value = Public> {
    let curve = prop::sample::select(vec![
        EccCurve::NistP192,
        EccCurve::NistP224,
        EccCurve::NistP256,
        EccCurve::NistP384,
        EccCurve::NistP521,
        EccCurve::BnP256,
        EccCurve::BnP638,
        EccCurve::Sm2P256,
    ]);
    let rsa = (symmetric(), rsa_scheme(), any::<u16>(), any::<u32>(), tpm2b::<512>()).prop_map(
        |(symmetric, scheme, key_bits, exponent, modulus)| PublicKey::Rsa {
            parms: RsaParms { symmetric, scheme, key_bits, exponent },
            modulus,
        },
    );
    let ecc = (symmetric(), ecc_scheme(), curve, kdf(), tpm2b::<128>(), tpm2b::<128>()).prop_map(
        |(symmetric, scheme, curve, kdf, x, y)| PublicKey::Ecc {
            parms: EccParms { symmetric, scheme, curve, kdf },
            point: EccPoint { x, y },
        },
    );
    (hash(), attributes(), tpm2b::<64>(), prop_oneof![rsa, ecc]).prop_map(
        |(name_alg, attributes, auth_policy, key)| Public {
            name_alg,
            attributes,
            auth_policy,
            key,
        },
    )
}

fn selection() -> impl Strategy<Value = PcrSelection> {
    prop::collection::vec((hash(), prop::collection::vec(0u8..24, 0..24)), 0..=16).prop_map(
        |banks| {
            PcrSelection::new(
                banks.into_iter().map(|(h, pcrs)| BankSelection::new(h, pcrs).unwrap()).collect(),
            )
            .unwrap()
        },
    )
}

fn attest() -> impl Strategy<Value = Attest> {
    let attested = prop_oneof![
        (selection(), tpm2b::<64>()).prop_map(|(pcr_select, pcr_digest)| Attested::Quote(
            QuoteInfo { pcr_select, pcr_digest }
        )),
        (tpm2b::<68>(), tpm2b::<68>()).prop_map(|(name, qualified_name)| Attested::Certify(
            CertifyInfo { name, qualified_name }
        )),
        (0x8014u16..0x8017, prop::collection::vec(any::<u8>(), 0..100))
            .prop_map(|(tag, body)| Attested::Other { tag, body }),
    ];
    (
        any::<u32>(),
        tpm2b::<68>(),
        tpm2b::<66>(),
        any::<(u64, u32, u32, bool)>(),
        any::<u64>(),
        attested,
    )
        .prop_map(
            |(
                magic,
                qualified_signer,
                extra_data,
                (clock, reset_count, restart_count, safe),
                firmware_version,
                attested,
            )| Attest {
                magic,
                qualified_signer,
                extra_data,
                clock_info: ClockInfo { clock, reset_count, restart_count, safe },
                firmware_version,
                attested,
            },
        )
}

fn signature() -> impl Strategy<Value = Signature> {
    prop_oneof![
        (hash(), tpm2b::<512>()).prop_map(|(hash, sig)| Signature::Rsassa { hash, sig }),
        (hash(), tpm2b::<512>()).prop_map(|(hash, sig)| Signature::Rsapss { hash, sig }),
        (hash(), tpm2b::<128>(), tpm2b::<128>()).prop_map(|(hash, r, s)| Signature::Ecdsa {
            hash,
            r,
            s
        }),
    ]
}

/// Every parser of the module, on arbitrary bytes. Results are ignored: only panics count.
fn parse_everything(bytes: &[u8]) {
    let _ = Attest::from_bytes(bytes);
    let _ = Attest::from_tpm2b(bytes);
    let _ = Signature::from_bytes(bytes);
    let _ = Public::from_bytes(bytes);
    let _ = Public::from_tpm2b(bytes);
    let _ = PcrSelection::from_bytes(bytes);
    let _ = QuotePcrs::from_bytes(bytes);
    let _ = MadeCredential::from_tpm2_tools(bytes);
    let _ = Spki::from_der(bytes);
    let _ = Spki::from_pem(&String::from_utf8_lossy(bytes));
    let _ = String::from_utf8_lossy(bytes).parse::<PcrSelection>();
    if let Ok(sel) = "sha256:0,1+sha1:2".parse::<PcrSelection>() {
        let _ = read_pcr_values(&sel, bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        parse_everything(&bytes);
    }

    #[test]
    fn mutated_structures_never_panic(a in attest(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut bytes = a.to_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        bytes.truncate(cut.index(bytes.len() + 1));
        parse_everything(&bytes);
    }

    #[test]
    fn public_round_trips(p in public()) {
        let bytes = p.to_bytes();
        prop_assert_eq!(&Public::from_bytes(&bytes).unwrap(), &p);
        prop_assert_eq!(Public::from_tpm2b(&p.to_tpm2b()).unwrap(), p.clone());
        // A name is nameAlg ‖ H(TPMT_PUBLIC) of the canonical bytes.
        let name = p.name();
        prop_assert_eq!(&name[..2], &p.name_alg.id().to_be_bytes()[..]);
        prop_assert_eq!(&name[2..], &p.name_alg.digest(&bytes)[..]);
        // Every strict prefix is refused.
        for n in 0..bytes.len() {
            prop_assert!(Public::from_bytes(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn attest_round_trips(a in attest()) {
        prop_assert_eq!(Attest::from_bytes(&a.to_bytes()).unwrap(), a);
    }

    #[test]
    fn signature_round_trips(s in signature()) {
        prop_assert_eq!(Signature::from_bytes(&s.to_bytes()).unwrap(), s);
    }

    #[test]
    fn selection_round_trips(sel in selection()) {
        prop_assert_eq!(&PcrSelection::from_bytes(&sel.to_bytes()).unwrap(), &sel);
        if !sel.banks().is_empty() && sel.banks().iter().all(|b| !b.is_empty()) {
            prop_assert_eq!(&sel.to_string().parse::<PcrSelection>().unwrap(), &sel);
        }
    }

    #[test]
    fn quote_pcrs_round_trip(sel in selection(), seed in any::<u8>()) {
        let mut values = PcrValues::new();
        for (bank, pcr) in sel.iter() {
            values.insert(bank, pcr, vec![seed ^ pcr; bank.size()]).unwrap();
        }
        let file = QuotePcrs { selection: sel, values };
        match file.to_bytes() {
            Ok(bytes) => prop_assert_eq!(QuotePcrs::from_bytes(&bytes).unwrap(), file),
            // tpm2-tools holds at most 32 lists of 8 values.
            Err(PcrError::TooManyValues { .. }) => prop_assert!(file.selection.count() > 256),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn credential_file_round_trips(id in tpm2b::<132>(), secret in tpm2b::<512>()) {
        let made = MadeCredential { id_object: id, encrypted_secret: secret };
        prop_assert_eq!(MadeCredential::from_tpm2_tools(&made.to_tpm2_tools()).unwrap(), made);
    }
}
