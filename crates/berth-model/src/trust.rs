//! Remote access: the clients the daemon trusts over HTTPS (by certificate fingerprint, as
//! Incus does), one-time join tokens, and the audit log's entries.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How long a join token stays usable.
pub const JOIN_TOKEN_HOURS: i64 = 24;

/// A client certificate the daemon trusts: requests over HTTPS presenting it act as `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrustedClient {
    /// What the client is called in `trust ls` and the audit log.
    pub name: String,
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub fingerprint: String,
    /// The certificate, PEM.
    pub certificate: String,
    pub added_at: DateTime<Utc>,
    /// "certificate" (added by an operator) or "token" (a client joined with a token).
    pub added_by: String,
    /// The project the client is confined to; `None`: the whole daemon, as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// When the trust ends by itself (a dashboard session's); `None`: until `trust rm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// How long a dashboard log-in lasts.
pub const DASHBOARD_SESSION_DAYS: i64 = 7;

/// A one-time join token as the store keeps it: the hash of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    /// The name the joining client is trusted as.
    pub name: String,
    /// The project it will be confined to.
    #[serde(default)]
    pub project: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/trust`: trust a certificate, or make a join token for a client to come.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustAddRequest {
    /// 1-40 letters, digits, '-', '_' or '.'.
    #[schema(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,39}$")]
    pub name: String,
    /// A client certificate (PEM) to trust now.
    #[serde(default)]
    pub certificate: Option<String>,
    /// Instead: a one-time token the client presents with `berth remote add`.
    #[serde(default)]
    pub token: bool,
    /// Confine the client to this project (which must exist).
    #[serde(default)]
    pub project: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct TrustAddResponse {
    /// The client now trusted (with a certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<TrustedClient>,
    /// The join token to hand to the client (with `token`), valid once, for 24 hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `POST /v1/trust/join` over HTTPS: the secret of a join token; the certificate the
/// connection presents becomes trusted.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustJoinRequest {
    pub secret: String,
}

/// One mutating request, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub time: DateTime<Utc>,
    /// Who asked: `local uid 0` on the socket, `NAME` of a trusted certificate, or
    /// `untrusted SHA256` over HTTPS.
    pub who: String,
    /// "socket" or "https" (with the client's address).
    pub via: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Why a request was refused before reaching the API (an untrusted certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Whether `name` may name a trusted client.
pub fn check_client_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok
        || name.len() > 40
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "'{}': a client name is 1-40 letters, digits, '-', '_' or '.', starting with a letter or digit",
            name.escape_default()
        ));
    }
    Ok(())
}
