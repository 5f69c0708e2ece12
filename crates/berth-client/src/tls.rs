//! Remote access over HTTPS, the way Incus does it: both ends have self-signed certificates
//! and trust each other by their SHA-256 fingerprints, not through a CA. The daemon keeps
//! the fingerprints of trusted clients; a client keeps each remote's URL and the server's
//! fingerprint (learnt from a join token), and pins it on every connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TlsError {
    let context = context.into();
    move |source| TlsError::Io { context, source }
}

/// A certificate's identity: the SHA-256 of its DER encoding, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The ring provider rustls was built with (berth loads no system crypto library).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Identity {
    pub certificate_pem: String,
    pub key_pem: String,
}

impl Identity {
    /// A new self-signed certificate for `names` (host names and addresses).
    pub fn generate(names: Vec<String>) -> Result<Identity, TlsError> {
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Invalid(format!("making a certificate: {e}")))?;
        Ok(Identity {
            certificate_pem: generated.cert.pem(),
            key_pem: generated.signing_key.serialize_pem(),
        })
    }

    /// `DIR/NAME.crt` and `DIR/NAME.key`, made (key readable by the owner only) if absent.
    pub fn load_or_create(dir: &Path, name: &str, names: Vec<String>) -> Result<Identity, TlsError> {
        let certificate = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        if certificate.exists() && key.exists() {
            return Ok(Identity {
                certificate_pem: std::fs::read_to_string(&certificate)
                    .map_err(io(format!("reading {}", certificate.display())))?,
                key_pem: std::fs::read_to_string(&key).map_err(io(format!("reading {}", key.display())))?,
            });
        }
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let identity = Identity::generate(names)?;
        write_private(&key, identity.key_pem.as_bytes())?;
        std::fs::write(&certificate, &identity.certificate_pem)
            .map_err(io(format!("writing {}", certificate.display())))?;
        Ok(identity)
    }

    pub fn certificate_der(&self) -> Result<CertificateDer<'static>, TlsError> {
        certificate_from_pem(&self.certificate_pem)
    }

    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError::Invalid(format!("the private key is not PEM: {e}")))
    }

    pub fn fingerprint(&self) -> Result<String, TlsError> {
        Ok(fingerprint(self.certificate_der()?.as_ref()))
    }
}

/// The first certificate of a PEM text.
pub fn certificate_from_pem(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::Invalid(format!("not a PEM certificate ({e}); give the .crt file")))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("writing {}", path.display())))?;
    file.write_all(data).map_err(io(format!("writing {}", path.display())))
}

/// What `berth trust add NAME --token` prints and `berth remote add` takes: where the daemon
/// is, the fingerprint to pin, and the one-time secret. Base64url of JSON, as one word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// The name the client is trusted as.
    pub name: String,
    /// The daemon's certificate fingerprint.
    pub fingerprint: String,
    /// Addresses the daemon listens at (`HOST:PORT`), for a `remote add` without a URL.
    #[serde(default)]
    pub addresses: Vec<String>,
    pub secret: String,
}

impl JoinToken {
    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn decode(text: &str) -> Result<JoinToken, TlsError> {
        use base64::Engine;
        let bad = || {
            TlsError::Invalid(
                "--token: not a berth join token; copy the whole word `berth trust add NAME --token` printed".into(),
            )
        };
        let data = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| bad())?;
        serde_json::from_slice(&data).map_err(|_| bad())
    }
}

/// One remote in the client's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remote {
    /// `https://HOST:PORT`.
    pub url: String,
    /// The daemon's certificate fingerprint, pinned.
    pub fingerprint: String,
}

/// The client's remotes (`remotes.json` in its configuration directory).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Remotes {
    #[serde(default)]
    pub remotes: std::collections::BTreeMap<String, Remote>,
}

/// Where the client keeps its certificate and remotes: `BERTH_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/berth`, else `~/.config/berth`.
pub fn config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("berth");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".config").join("berth")
}

impl Remotes {
    pub fn load(dir: &Path) -> Result<Remotes, TlsError> {
        let path = dir.join("remotes.json");
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map_err(|e| TlsError::Invalid(format!("{}: {e}; fix or remove it", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Remotes::default()),
            Err(e) => Err(io(format!("reading {}", path.display()))(e)),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let path = dir.join("remotes.json");
        let data = serde_json::to_vec_pretty(self).map_err(|e| TlsError::Invalid(e.to_string()))?;
        write_private(&path.with_extension("json.new"), &data)?;
        std::fs::rename(path.with_extension("json.new"), &path).map_err(io(format!("writing {}", path.display())))
    }
}

/// The client's TLS settings for a remote: its own certificate, the server's pinned.
pub fn client_config(identity: &Identity, server_fingerprint: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer {
            fingerprint: server_fingerprint.to_ascii_lowercase(),
            provider,
        }))
        .with_client_auth_cert(vec![identity.certificate_der()?], identity.key_der()?)
        .map_err(|e| TlsError::Invalid(format!("the client certificate: {e}")))?;
    Ok(Arc::new(config))
}

/// Accepts exactly the server certificate whose fingerprint was pinned (the handshake's
/// signature still proves the server holds its key).
#[derive(Debug)]
struct PinnedServer {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint(end_entity.as_ref());
        if presented == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate is {presented}, not the pinned {}: another server, or a new certificate (remove and add the remote again)",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
