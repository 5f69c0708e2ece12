//! The HTTPS listener (`berth daemon --listen ADDR:PORT`): the same API as the socket, for
//! clients whose certificate the daemon trusts (`berth trust`), as Incus serves its API.
//! The daemon's certificate is made on first start (`STATE_DIR/tls/server.crt`) and clients
//! pin its fingerprint. TLS asks every client for a certificate but takes any: trust is
//! decided per request against the trusted fingerprints, so a client without trust can still
//! reach the one thing it may do — redeem a join token (`POST /v1/trust/join`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use berth_client::tls::{self, Identity};
use berth_model::trust::{TrustJoinRequest, TrustedClient};
use hyper_util::rt::TokioIo;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tower::ServiceExt;

use crate::audit::{Caller, Refused, TrustedAs};
use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a join token tells a client about this daemon.
pub struct ServerIdentity {
    pub fingerprint: String,
    pub addresses: Vec<String>,
}

fn tls_dir(engine: &Engine) -> std::path::PathBuf {
    engine.config.state_dir.join("tls")
}

fn load_or_create(engine: &Engine) -> Result<Identity, tls::TlsError> {
    let mut names = vec!["localhost".to_string()];
    if let Ok(host) = nix::unistd::gethostname() {
        names.push(host.to_string_lossy().into_owned());
    }
    if let Some(address) = engine.config.listen.filter(|a| !a.ip().is_unspecified()) {
        names.push(address.ip().to_string());
    }
    Identity::load_or_create(&tls_dir(engine), "server", names)
}

impl ServerIdentity {
    pub fn of(engine: &Engine) -> EngineResult<ServerIdentity> {
        let Some(listen) = engine.config.listen else {
            // The daemon's state, not the request, is what is wrong: 409.
            return Err(EngineError::conflict(
                "this daemon does not serve HTTPS: start it with --listen ADDR:8443 to take remote clients",
            ));
        };
        let identity = load_or_create(engine).map_err(|e| EngineError::internal(e.to_string()))?;
        let fingerprint = identity
            .fingerprint()
            .map_err(|e| EngineError::internal(e.to_string()))?;
        let advertised = engine
            .config
            .cluster
            .as_ref()
            .and_then(|c| c.advertise)
            .map(|ip| SocketAddr::new(ip, listen.port()).to_string());
        let addresses = match (listen.ip().is_unspecified(), advertised) {
            (false, _) => vec![listen.to_string()],
            (true, Some(address)) => vec![address],
            (true, None) => Vec::new(),
        };
        Ok(ServerIdentity { fingerprint, addresses })
    }
}

/// Starts serving HTTPS on `address`; returns once it listens.
pub async fn serve(engine: Arc<Engine>, address: SocketAddr) -> anyhow::Result<()> {
    let identity = load_or_create(&engine).map_err(|e| anyhow::anyhow!("--listen: the server certificate: {e}"))?;
    let fingerprint = identity.fingerprint().map_err(|e| anyhow::anyhow!("{e}"))?;
    let provider = tls::provider();
    let config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(Arc::new(AnyClientCertificate { provider }))
        .with_single_cert(
            vec![identity.certificate_der().map_err(|e| anyhow::anyhow!("{e}"))?],
            identity.key_der().map_err(|e| anyhow::anyhow!("{e}"))?,
        )
        .context("the server certificate")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("--listen {address}: listening"))?;
    let router = router(engine.clone());
    tracing::info!(%address, %fingerprint, "serving the API over HTTPS");
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTPS connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let certificate = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|der| (tls::fingerprint(der.as_ref()), pem(der.as_ref())));
                let caller = Caller::Https {
                    address: peer,
                    fingerprint: certificate.as_ref().map(|c| c.0.clone()),
                    certificate_pem: certificate.map(|c| c.1),
                };
                let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(caller.clone());
                    router.clone().oneshot(request.map(axum::body::Body::new))
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
                {
                    tracing::debug!(%peer, error = %e, "HTTPS connection");
                }
            });
        }
    });
    Ok(())
}

fn router(engine: Arc<Engine>) -> Router {
    crate::api::router(engine.clone())
        .route("/v1/trust/join", axum::routing::post(join).with_state(engine.clone()))
        .merge(crate::dashboard::routes(engine.clone()))
        .layer(axum::middleware::from_fn_with_state(engine.clone(), authorize))
        .layer(axum::middleware::from_fn_with_state(engine, crate::audit::record))
}

/// Lets a trusted client's requests through (naming it for the audit log): a trusted
/// certificate, or a dashboard session's cookie. Of an untrusted one only `_ping`, redeeming
/// a join token, and the dashboard's page and login.
async fn authorize(State(engine): State<Arc<Engine>>, mut request: Request, next: Next) -> Response {
    let fingerprint = match request.extensions().get::<Caller>() {
        Some(Caller::Https { fingerprint, .. }) => fingerprint.clone(),
        _ => None,
    };
    let mut trusted = match &fingerprint {
        Some(fingerprint) => match engine.trusted_client(fingerprint).await {
            Ok(found) => found,
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    if trusted.is_none() {
        if let Some(session) = crate::dashboard::session_fingerprint(request.headers()) {
            trusted = match engine.trusted_client(&session).await {
                Ok(found) => found,
                Err(e) => return e.into_response(),
            };
            if let Some(client) = &trusted {
                if let Some(reason) = crate::dashboard::cross_site(&request) {
                    let mut response = refused(reason);
                    response.extensions_mut().insert(TrustedAs(client.name.clone()));
                    return response;
                }
            }
        }
    }
    let path = request.uri().path().to_string();
    if let Some(client) = trusted {
        let name = TrustedAs(client.name);
        request.extensions_mut().insert(name.clone());
        let project = client.project.filter(|_| !crate::dashboard::is_session_endpoint(&path));
        let mut response = match project {
            Some(project) => crate::project_scope::confine(&engine, &project, request, next).await,
            None => next.run(request).await,
        };
        // The audit layer around this one reads it from the response.
        response.extensions_mut().insert(name);
        return response;
    }
    if path == "/v1/_ping"
        || (path == "/v1/trust/join" && request.method() == axum::http::Method::POST)
        || crate::dashboard::is_public(request.method(), &path)
    {
        return next.run(request).await;
    }
    refused(match fingerprint {
        Some(fingerprint) => format!(
            "this client's certificate ({fingerprint}) is not trusted: `berth trust add NAME --token` on the server, then `berth remote add NAME URL --token TOKEN` here"
        ),
        None => "no client certificate: berth's HTTPS API takes trusted client certificates (`berth remote add`) or a dashboard session (log in at /ui/ with a token)".to_string(),
    })
}

fn refused(reason: String) -> Response {
    tracing::warn!(%reason, "refused an HTTPS request");
    let mut response = EngineError::new(StatusCode::FORBIDDEN, reason.clone()).into_response();
    response.extensions_mut().insert(Refused(reason));
    response
}

/// `POST /v1/trust/join`: the connection's certificate becomes trusted if the secret is a
/// live join token's.
async fn join(
    State(engine): State<Arc<Engine>>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<TrustJoinRequest>,
) -> EngineResult<Json<TrustedClient>> {
    let Caller::Https {
        certificate_pem: Some(certificate_pem),
        ..
    } = caller
    else {
        return Err(EngineError::invalid(
            "certificate",
            "joining needs a client certificate on the HTTPS connection (`berth remote add` presents one)",
        ));
    };
    let der =
        tls::certificate_from_pem(&certificate_pem).map_err(|e| EngineError::invalid("certificate", e.to_string()))?;
    Ok(Json(
        engine
            .join_with_token(&request.secret, der.as_ref(), certificate_pem)
            .await?,
    ))
}

fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str("-----END CERTIFICATE-----\n");
    text
}

/// Asks for a client certificate and takes any whose holder proves it has the key: which
/// certificates are trusted is the store's business, per request.
#[derive(Debug)]
struct AnyClientCertificate {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
