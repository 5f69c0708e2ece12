//! Which client certificates the daemon trusts over HTTPS, kept in the store (the cluster's
//! store in a cluster: a client trusted by one node is trusted by all), and one-time join
//! tokens: `trust add NAME --token` prints one; the client's `remote add` presents its
//! secret over HTTPS with its certificate, which becomes trusted as NAME, and the token is
//! gone (its record is deleted in the same transaction that trusts the certificate).

use berth_client::tls::{self, JoinToken};
use berth_model::project::check_project_name;
use berth_model::trust::{
    check_client_name, JoinTokenRecord, TrustAddRequest, TrustAddResponse, TrustedClient, JOIN_TOKEN_HOURS,
};
use berth_store::{RecordTxn, StoreError};
use chrono::{Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

fn name_taken(name: &str) -> EngineError {
    EngineError::conflict(format!(
        "a trusted client is already called {name}; pick another name or `berth trust rm {name}` first"
    ))
}

fn store_error(name: &str, e: StoreError) -> EngineError {
    match e {
        StoreError::NameTaken(_) => name_taken(name),
        StoreError::AlreadyExists { .. } => {
            EngineError::conflict("this certificate is already trusted (`berth trust ls` shows under which name)")
        }
        other => other.into(),
    }
}

impl Engine {
    /// `POST /v1/trust` (on the socket, or by a trusted client).
    pub async fn add_trust(&self, request: TrustAddRequest) -> EngineResult<TrustAddResponse> {
        check_client_name(&request.name).map_err(|m| EngineError::invalid("name", m))?;
        if let Some(project) = &request.project {
            check_project_name(project).map_err(|m| EngineError::invalid("project", m))?;
            self.project(project).await?;
        }
        let existing = self.trusted_clients().await?;
        if existing.iter().any(|c| c.name == request.name) {
            return Err(name_taken(&request.name));
        }
        match (request.certificate, request.token) {
            (Some(pem), false) => {
                let der =
                    tls::certificate_from_pem(&pem).map_err(|e| EngineError::invalid("certificate", e.to_string()))?;
                let client = TrustedClient {
                    name: request.name.clone(),
                    fingerprint: tls::fingerprint(der.as_ref()),
                    certificate: pem,
                    added_at: Utc::now(),
                    added_by: "certificate".into(),
                    project: request.project.clone(),
                    expires_at: None,
                };
                self.store
                    .create(&client)
                    .await
                    .map_err(|e| store_error(&request.name, e))?;
                tracing::info!(name = %client.name, fingerprint = %client.fingerprint, "client certificate trusted");
                Ok(TrustAddResponse {
                    client: Some(client),
                    ..Default::default()
                })
            }
            (None, true) => {
                let https = crate::https::ServerIdentity::of(self)?;
                let mut secret = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut secret);
                let secret = hex::encode(secret);
                let now = Utc::now();
                let record = JoinTokenRecord {
                    secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
                    name: request.name.clone(),
                    project: request.project.clone(),
                    created_at: now,
                    expires_at: now + Duration::hours(JOIN_TOKEN_HOURS),
                };
                self.store.create(&record).await?;
                let token = JoinToken {
                    name: request.name,
                    fingerprint: https.fingerprint,
                    addresses: https.addresses,
                    secret,
                };
                Ok(TrustAddResponse {
                    token: Some(token.encode()),
                    expires_at: Some(record.expires_at),
                    client: None,
                })
            }
            (Some(_), true) => Err(EngineError::invalid(
                "token",
                "give a certificate or ask for a token, not both",
            )),
            (None, false) => Err(EngineError::invalid(
                "certificate",
                "give the client's certificate (PEM) or ask for a join token (--token)",
            )),
        }
    }

    /// A client presenting `certificate` (over HTTPS) redeems a join token's secret.
    pub async fn join_with_token(
        &self,
        secret: &str,
        certificate_der: &[u8],
        certificate_pem: String,
    ) -> EngineResult<TrustedClient> {
        self.redeem_join_token(
            secret,
            tls::fingerprint(certificate_der),
            certificate_pem,
            "token",
            None,
        )
        .await
    }

    /// Redeems a join token's secret: `fingerprint` (a certificate's, or the hash of a
    /// dashboard session's secret) becomes trusted under the token's name and project.
    pub async fn redeem_join_token(
        &self,
        secret: &str,
        fingerprint: String,
        certificate_pem: String,
        added_by: &str,
        expires_at: Option<chrono::DateTime<Utc>>,
    ) -> EngineResult<TrustedClient> {
        let refused = || {
            EngineError::new(
            axum::http::StatusCode::FORBIDDEN,
            "the join token is wrong, used or expired; ask the server's operator for a new one (`berth trust add NAME --token`)",
        )
        };
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        let Some(token) = self.store.try_get::<JoinTokenRecord>(&hash).await? else {
            return Err(refused());
        };
        if token.value.expires_at < Utc::now() {
            let _ = self.store.remove::<JoinTokenRecord>(&hash).await;
            return Err(refused());
        }
        let client = TrustedClient {
            name: token.value.name.clone(),
            fingerprint,
            certificate: certificate_pem,
            added_at: Utc::now(),
            added_by: added_by.into(),
            project: token.value.project.clone(),
            expires_at,
        };
        // Both or neither: a token is used exactly once, even by two clients at once.
        let txn = RecordTxn::new().delete(&token.value, token.revision)?.create(&client)?;
        match self.store.commit(txn).await {
            Ok(_) => {
                tracing::info!(name = %client.name, fingerprint = %client.fingerprint, added_by, "client joined with a token");
                Ok(client)
            }
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Err(refused()),
            Err(e) => Err(store_error(&client.name, e)),
        }
    }

    pub async fn trusted_clients(&self) -> EngineResult<Vec<TrustedClient>> {
        let listing = self.store.list::<TrustedClient>().await?;
        Ok(listing.items.into_iter().map(|item| item.value).collect())
    }

    /// The trusted client with this certificate fingerprint, if any (an expired one is
    /// removed and is no longer trusted).
    pub async fn trusted_client(&self, fingerprint: &str) -> EngineResult<Option<TrustedClient>> {
        let Some(found) = self.store.try_get::<TrustedClient>(fingerprint).await? else {
            return Ok(None);
        };
        if found.value.expires_at.is_some_and(|at| at < Utc::now()) {
            tracing::info!(name = %found.value.name, "a dashboard session expired");
            let _ = self.store.remove::<TrustedClient>(fingerprint).await;
            return Ok(None);
        }
        Ok(Some(found.value))
    }

    /// Stops trusting a client, by name or fingerprint.
    pub async fn remove_trust(&self, key: &str) -> EngineResult<()> {
        let clients = self.trusted_clients().await?;
        let client = clients
            .iter()
            .find(|c| c.name == key || c.fingerprint == key.to_ascii_lowercase())
            .ok_or_else(|| EngineError::not_found(format!("no trusted client {key}; `berth trust ls` lists them")))?;
        self.store.remove::<TrustedClient>(&client.fingerprint).await?;
        tracing::info!(name = %client.name, "client no longer trusted");
        Ok(())
    }
}
