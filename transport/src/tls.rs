//! rustls configurations for tresor's roles (DESIGN.md §3 "Transport"): ring is the only
//! crypto provider; servers present a certificate chain under the CI; MNOs, RO and PVA
//! authenticate each other with client certificates verified against the CI root (mutual
//! TLS); devices connect without a client certificate and authenticate by attestation.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use protocol::role::{CertifiedRole, Expected, RoleError};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::{Error, Result};

/// The ring crypto provider. tresor never uses aws-lc.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain (leaf first) and its private key: what a role presents in TLS.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// `chain` must hold at least the leaf. Whether `key` belongs to the leaf is checked when
    /// a configuration is built from the identity.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self> {
        if chain.is_empty() {
            return Err(Error::NoCertificate { what: "identity".into() });
        }
        Ok(Self { chain, key })
    }

    /// Certificates (leaf first) and a private key (PKCS#8, SEC1 or PKCS#1), both PEM.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        let chain = certificates_from_pem(chain_pem)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::PrivateKey(e.to_string()))?;
        Self::new(chain, key)
    }

    /// [`Identity::from_pem`] from two files.
    pub fn from_pem_files(chain: &Path, key: &Path) -> Result<Self> {
        Self::from_pem(&read(chain)?, &read(key)?)
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self { chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("chain_len", &self.chain.len())
            .field("key", &"(redacted)")
            .finish()
    }
}

/// Whether and how a server asks for client certificates.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client certificate requested (device-facing endpoints).
    None,
    /// A client certificate is verified against the roots when offered; clients without one
    /// are admitted, and handlers see no `PeerIdentity`.
    Optional(Vec<CertificateDer<'static>>),
    /// The handshake fails without a client certificate chaining to the roots.
    Required(Vec<CertificateDer<'static>>),
}

/// A server configuration presenting `identity`, with ALPN h2 and http/1.1.
pub fn server_config(identity: &Identity, client_auth: ClientAuth) -> Result<Arc<ServerConfig>> {
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional(roots) | ClientAuth::Required(roots) if roots.is_empty() => {
            return Err(Error::NoTrustAnchors);
        }
        ClientAuth::Optional(roots) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(root_store(&roots)?, provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| Error::ClientVerifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        ClientAuth::Required(roots) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(root_store(&roots)?, provider)
                    .build()
                    .map_err(|e| Error::ClientVerifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Which server a client accepts, beyond a chain to its roots and its host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerRole {
    /// The server's certificate must hold this role (and name): what every party uses.
    Expected(Expected),
    /// Any certificate with a valid tresor role: lab tooling that talks to every role.
    AnyRole,
    /// A server outside tresor's CI (a webhook receiver under its own roots): the Web PKI
    /// checks only, no role.
    Outside,
}

impl From<Expected> for ServerRole {
    fn from(expected: Expected) -> Self {
        ServerRole::Expected(expected)
    }
}

/// A client configuration trusting `roots` (the CI root), accepting only a server of `server`
/// role and, for mutual TLS, presenting `identity`. ALPN http/1.1: the reqwest client speaks
/// HTTP/1.1.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    identity: Option<&Identity>,
    server: &ServerRole,
) -> Result<ClientConfig> {
    if roots.is_empty() {
        return Err(Error::NoTrustAnchors);
    }
    let provider = crypto_provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(root_store(roots)?, provider.clone())
        .build()
        .map_err(|e| Error::TrustAnchor(e.to_string()))?;
    let verifier = Arc::new(RoleVerifier { webpki, server: server.clone() });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration that trusts no server: for a client that speaks plain HTTP to a
/// loopback address only (a test's webhook receiver), which reqwest still builds a TLS
/// configuration for.
pub fn trust_nothing_config() -> Result<ClientConfig> {
    Ok(ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

/// The Web PKI checks (chain to the roots, validity, serverAuth, host name) and then the
/// role the client requires of the server's certificate (`protocol::role`): a certificate of
/// another role under the same CI is refused in the handshake.
#[derive(Debug)]
struct RoleVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    server: ServerRole,
}

impl ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let refuse = |e: RoleError| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        };
        if self.server == ServerRole::Outside {
            return Ok(verified);
        }
        let role = CertifiedRole::of_der(end_entity).map_err(refuse)?;
        if let ServerRole::Expected(expected) = &self.server {
            role.require(expected).map_err(refuse)?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// All CERTIFICATE blocks of a PEM text (at least one).
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(Error::NoCertificate { what: "PEM".into() });
    }
    Ok(certs)
}

/// Trust anchors from a PEM file (for example the CI root `ci.pem`).
pub fn roots_from_pem_file(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    certificates_from_pem(&read(path)?)
}

fn root_store(roots: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).map_err(|e| Error::TrustAnchor(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

/// Reads a PEM file of bounded size (certificates and keys are a few KiB).
fn read(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    const MAX: u64 = 1024 * 1024;
    let io = |source| Error::Io { path: path.display().to_string(), source };
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(io)?.take(MAX + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX {
        return Err(Error::Pem(format!("{} is larger than {MAX} bytes", path.display())));
    }
    Ok(bytes)
}
