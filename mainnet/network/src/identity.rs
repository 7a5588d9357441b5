//! Node identities and the TLS configuration that pins peers to them.
//!
//! Each node holds an Ed25519 identity key. Connections use TLS 1.3 inside QUIC with raw
//! public keys (RFC 7250) instead of certificates: each side presents its public key, proves
//! it with the handshake signature, and is accepted only if that key belongs to the known
//! validator set. A dialer also checks that the key is the one of the peer it meant to reach.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature_with_raw_key, CryptoProvider};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::NetworkError;

/// A node's public identity: the DER `SubjectPublicKeyInfo` of its Ed25519 key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub Vec<u8>);

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerKey(")?;
        for b in self.0.iter().rev().take(6).rev() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A node's identity key pair.
#[derive(Clone)]
pub struct Identity {
    pkcs8: Vec<u8>,
    public: PeerKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({:?})", self.public)
    }
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Result<Identity, NetworkError> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| NetworkError::Identity(e.to_string()))?;
        Ok(Identity {
            pkcs8: kp.serialize_der(),
            public: PeerKey(rcgen::PublicKeyData::subject_public_key_info(&kp)),
        })
    }

    /// The identity stored as a PKCS#8 document.
    pub fn from_pkcs8(der: &[u8]) -> Result<Identity, NetworkError> {
        let kp =
            rcgen::KeyPair::try_from(der).map_err(|e| NetworkError::Identity(e.to_string()))?;
        if kp.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(NetworkError::Identity("not an Ed25519 key".into()));
        }
        Ok(Identity {
            pkcs8: der.to_vec(),
            public: PeerKey(rcgen::PublicKeyData::subject_public_key_info(&kp)),
        })
    }

    /// The key of the stateless resets this node sends for packets of connections it does
    /// not know (RFC 9000 §10.3), derived from the identity: the same validator restarted
    /// answers a peer still sending on a connection of its previous run with a reset that
    /// peer accepts, and the peer drops the connection at once. With a key of its own per
    /// run (quinn's default), the peer kept sending into the dead connection until its idle
    /// timeout (5 s), and every frame it sent meanwhile was lost. As secret as the identity:
    /// whoever holds it can end this node's connections.
    ///
    /// Derived from the identity's stored encoding (PKCS#8): a key file rewritten in another
    /// encoding of the same key gives another reset key, and the first restart after that
    /// falls back to the idle timeout.
    pub(crate) fn reset_key(&self) -> ring::hmac::Key {
        let derive = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.pkcs8);
        let tag = ring::hmac::sign(&derive, b"farol-network stateless reset key, version 1");
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, tag.as_ref())
    }

    /// The PKCS#8 encoding (to store the identity).
    pub fn to_pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key peers pin.
    pub fn public_key(&self) -> &PeerKey {
        &self.public
    }

    fn certified_key(&self, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, NetworkError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()));
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| NetworkError::Identity(e.to_string()))?;
        Ok(Arc::new(CertifiedKey::new(vec![CertificateDer::from(self.public.0.clone())], signer)))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts exactly the keys in a set (a server's check of its clients, or a client's check
/// of the one server it dialed).
#[derive(Debug)]
struct Pinned {
    keys: Vec<PeerKey>,
    provider: Arc<CryptoProvider>,
}

impl Pinned {
    fn check(&self, presented: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.keys.iter().any(|k| k.0.as_slice() == presented.as_ref()) {
            Ok(())
        } else {
            Err(rustls::Error::General("peer key is not in the validator set".into()))
        }
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(cert.as_ref()),
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The handshake checks both verifier traits share: TLS 1.3 signatures by the presented raw
/// key, and no TLS 1.2.
macro_rules! handshake_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.2 is not used".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.verify13(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.schemes()
        }

        fn requires_raw_public_keys(&self) -> bool {
            true
        }
    };
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity).map(|_| ServerCertVerified::assertion())
    }

    handshake_checks!();
}

impl ClientCertVerifier for Pinned {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity).map(|_| ClientCertVerified::assertion())
    }

    handshake_checks!();
}

/// The ALPN protocol name of Farol's validator network (`NetworkConfig::protocol`'s
/// default; a node adds its chain rules' version to it).
pub const ALPN: &[u8] = b"farol-validator/1";

/// TLS for accepting connections speaking `protocol` (ALPN): present `identity`, require a
/// client key in `allowed`.
pub(crate) fn server_config(
    identity: &Identity,
    allowed: Vec<PeerKey>,
    protocol: &[u8],
) -> Result<rustls::ServerConfig, NetworkError> {
    let provider = provider();
    let verifier = Arc::new(Pinned { keys: allowed, provider: provider.clone() });
    let ck = identity.certified_key(&provider)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetworkError::Identity(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::server::AlwaysResolvesServerRawPublicKeys::new(ck)));
    cfg.alpn_protocols = vec![protocol.to_vec()];
    Ok(cfg)
}

/// TLS for dialing the peer whose key is `expected` in `protocol` (ALPN), presenting
/// `identity`.
pub(crate) fn client_config(
    identity: &Identity,
    expected: PeerKey,
    protocol: &[u8],
) -> Result<rustls::ClientConfig, NetworkError> {
    let provider = provider();
    let verifier = Arc::new(Pinned { keys: vec![expected], provider: provider.clone() });
    let ck = identity.certified_key(&provider)?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetworkError::Identity(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(
            rustls::client::AlwaysResolvesClientRawPublicKeys::new(ck),
        ));
    cfg.alpn_protocols = vec![protocol.to_vec()];
    Ok(cfg)
}
