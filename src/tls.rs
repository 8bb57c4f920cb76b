//! PEM files for TLS on rustls with the ring provider (the one reqwest already uses, so
//! no second crypto library is built): the API's server certificate and key, and an MQTT
//! broker's private CA and client certificate. Errors name the setting and the file.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors reading a PEM file named by a setting.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("reading {what} {path}: {source}")]
    Read {
        what: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{what} {path} holds no PEM {expected}")]
    Empty {
        what: String,
        path: String,
        expected: &'static str,
    },
}

fn read(what: &str, path: &str) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        what: what.to_string(),
        path: path.to_string(),
        source,
    })
}

/// Every certificate in the PEM file `path` (setting `what`); at least one.
pub fn certificates(what: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(what, path)?)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(PemError::Empty {
            what: what.to_string(),
            path: path.to_string(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

/// The private key (PKCS#8, PKCS#1 or SEC1) in the PEM file `path` (setting `what`).
pub fn private_key(what: &str, path: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(&read(what, path)?).map_err(|_| PemError::Empty {
        what: what.to_string(),
        path: path.to_string(),
        expected: "private key",
    })
}

/// The crypto provider for every TLS configuration built here.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_setting_and_the_file() {
        let dir = std::env::temp_dir().join(format!("facestream-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem").display().to_string();
        let e = certificates("events.mqtt[b].ca_file", &missing).unwrap_err();
        assert!(
            e.to_string().contains("events.mqtt[b].ca_file") && e.to_string().contains(&missing)
        );
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk = junk.display().to_string();
        let e = certificates("x.ca_file", &junk).unwrap_err();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
        let e = private_key("x.key", &junk).unwrap_err();
        assert!(e.to_string().contains("holds no PEM private key"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
