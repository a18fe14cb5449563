//! TLS for the HTTP API: the certificate chain and key of `TLS_CERT_FILE`
//! and `TLS_KEY_FILE` (PEM), served through a resolver whose pair
//! [`CertStore::reload`] replaces (on SIGHUP), so that a renewed
//! certificate takes effect for new connections without a restart; a file
//! that does not load leaves the pair in service as it is and says why.
//! rustls with its default provider, aws-lc-rs.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why the certificate or key did not load.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS_CERT_FILE {}: {problem}", path.display())]
    Cert { path: PathBuf, problem: String },
    #[error("TLS_KEY_FILE {}: {problem}", path.display())]
    Key { path: PathBuf, problem: String },
    #[error(
        "TLS_KEY_FILE {} is not the key of the certificate in TLS_CERT_FILE {}",
        key.display(),
        cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a certificate chain and its key.
pub fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_error = |problem: String| TlsError::Cert {
        path: cert.to_path_buf(),
        problem,
    };
    let key_error = |problem: String| TlsError::Key {
        path: key.to_path_buf(),
        problem,
    };
    let pem = std::fs::read(cert).map_err(|e| cert_error(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error(
            "no certificate in it (PEM, -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let pem = std::fs::read(key).map_err(|e| key_error(e.to_string()))?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        key_error(format!(
            "no private key in it (PEM: PKCS#8, PKCS#1 or SEC1): {e}"
        ))
    })?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        },
        other => key_error(other.to_string()),
    })
}

/// The API's certificate and key, replaceable while serving.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the pair; any problem is an error naming the file.
    pub fn open(cert: &Path, key: &Path) -> Result<Arc<CertStore>, TlsError> {
        let provider = provider();
        let pair = load(cert, key, &provider)?;
        Ok(Arc::new(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(pair)),
        }))
    }

    /// Reads the files again; on success new connections get the new pair,
    /// on failure the one in service stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = load(&self.cert, &self.key, &self.provider)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(pair);
        Ok(())
    }

    /// The server configuration: TLS 1.2 and 1.3, no client certificates,
    /// the certificate from this store at each handshake.
    pub fn server_config(self: &Arc<CertStore>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn files_are_checked_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (c1, k1) = pair("one.test");
        let (c2, k2) = pair("two.test");
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let store = CertStore::open(&cert, &key).unwrap();
        let served = |s: &CertStore| s.current.read().unwrap().cert[0].clone();
        let first = served(&store);
        assert!(store.server_config().is_ok());

        // A key of another certificate: refused, the pair in service stays.
        std::fs::write(&cert, &c2).unwrap();
        let e = store.reload().unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains("is not the key of the certificate"));
        assert_eq!(served(&store), first);
        std::fs::write(&key, &k2).unwrap();
        store.reload().unwrap();
        assert_ne!(served(&store), first);

        std::fs::write(&key, "not a key").unwrap();
        let e = store.reload().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("TLS_KEY_FILE {}: no private key", key.display())),
            "{e}"
        );
        std::fs::write(&cert, "").unwrap();
        let e = store.reload().unwrap_err().to_string();
        assert!(e.contains("no certificate in it"), "{e}");
        let e = CertStore::open(&dir.path().join("nope"), &key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope: No such file"), "{e}");
    }
}
