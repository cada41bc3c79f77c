//! TLS for listeners: a rustls server configuration from PEM files, with
//! ALPN offering HTTP/2 and HTTP/1.1 (the accept loop serves either), and
//! for the edge a set of certificates chosen by SNI that can be replaced
//! while connections are open ([`SniResolver`]).
//!
//! Only TLS 1.2 and 1.3 are offered: rustls implements nothing older.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate file {}: {source}", file.display())]
    Certificates {
        file: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("certificate file {} holds no certificate", file.display())]
    NoCertificate { file: PathBuf },
    #[error("key file {}: {source}", file.display())]
    Key {
        file: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("key {} does not fit certificate {}: {source}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// Loads a certificate chain and its private key (PEM) for serving.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key) = read_pair(cert_file, key_file)?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Mismatch {
            cert: cert_file.to_path_buf(),
            key: key_file.to_path_buf(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

type Pair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn read_pair(cert_file: &Path, key_file: &Path) -> Result<Pair, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates {
            file: cert_file.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            file: cert_file.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Key {
        file: key_file.to_path_buf(),
        source,
    })?;
    Ok((chain, key))
}

/// One certificate of an edge listener and the names it answers for
/// (`live.example.com`, or `*.example.com` for any one-label subdomain).
#[derive(Debug, Clone)]
pub struct CertSpec {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub names: Vec<String>,
    pub default: bool,
}

/// Certificates by server name, loaded and checked as a set.
#[derive(Debug, Default)]
pub struct SniCertificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*`, such as `.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniCertificates {
    /// Reads every certificate and key; fails on the first unreadable file
    /// or key that does not belong to its certificate.
    pub fn load(specs: &[CertSpec]) -> Result<SniCertificates, TlsError> {
        let provider = rustls::crypto::ring::default_provider();
        let mut set = SniCertificates::default();
        for (i, spec) in specs.iter().enumerate() {
            let (chain, key) = read_pair(&spec.cert_file, &spec.key_file)?;
            let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|source| {
                TlsError::Mismatch {
                    cert: spec.cert_file.clone(),
                    key: spec.key_file.clone(),
                    source,
                }
            })?;
            let certified = Arc::new(certified);
            for name in &spec.names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix('*') {
                    Some(suffix) => set.wildcard.insert(suffix.to_string(), certified.clone()),
                    None => set.exact.insert(name, certified.clone()),
                };
            }
            if spec.default || (i == 0 && !specs.iter().any(|s| s.default)) {
                set.default = Some(certified);
            }
        }
        Ok(set)
    }

    fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        // A wildcard covers exactly one label: *.example.com matches
        // a.example.com, not example.com or a.b.example.com (RFC 6125 §6.4.3).
        if let Some((_, suffix)) = name.split_once('.') {
            if let Some(c) = self.wildcard.get(&format!(".{suffix}")) {
                return Some(c.clone());
            }
        }
        self.default.clone()
    }
}

/// Picks a certificate by SNI from a set that [`SniResolver::replace`]
/// swaps whole: handshakes in progress finish with the set they started on,
/// open connections keep theirs, new handshakes get the new one.
#[derive(Debug)]
pub struct SniResolver {
    certificates: ArcSwap<SniCertificates>,
}

impl SniResolver {
    pub fn new(certificates: SniCertificates) -> Arc<SniResolver> {
        Arc::new(SniResolver {
            certificates: ArcSwap::from_pointee(certificates),
        })
    }

    pub fn replace(&self, certificates: SniCertificates) {
        self.certificates.store(Arc::new(certificates));
    }

    /// A server configuration that takes its certificates from `resolver`,
    /// offering HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(resolver: &Arc<SniResolver>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certificates.load().choose(hello.server_name())
    }
}
