//! Nodes reaching each other: any node's API serves the whole cluster by forwarding a
//! request about another node's instance to that node, over TCP to the address it
//! advertises (`--advertise IP`, port `--peer-port`).
//!
//! The peer port serves the same API as the socket, to other members only: every request
//! must carry the cluster's token, a random secret made by the first node to join and kept
//! in etcd (whoever can read the cluster's etcd is its administrator anyway, as in k3s).
//! The link is plain TCP: run clusters on a private network (TLS between nodes is future
//! work). A forwarded request is marked so that it is never forwarded again.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_store::{Expect, Store, StoreError, Txn};
use hyper_util::rt::TokioIo;

use crate::cluster::Membership;
use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

/// The port nodes serve each other on unless `--peer-port` says otherwise.
pub const DEFAULT_PEER_PORT: u16 = 7380;
/// The cluster's shared secret.
const TOKEN_KEY: &str = "/berth/v1/cluster/token";
const TOKEN_HEADER: &str = "x-berth-cluster-token";
/// On a request one node passed to another: serve it here, never pass it on.
const FORWARDED_HEADER: &str = "x-berth-forwarded-by";
/// On a placed create: why the scheduler chose the node (recorded in the instance's spec).
const PLACEMENT_HEADER: &str = "x-berth-placement";

/// The scheduler's reason on a placed create (set by this daemon or, behind the token, by
/// the node that placed it; a socket client's is removed before it gets here).
pub fn placement_reason(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(PLACEMENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The cluster's token: read, or made by the first node that joins (compare-and-swap, so
/// two first nodes agree on one).
pub async fn cluster_token(store: &Store) -> Result<String, StoreError> {
    let key = TOKEN_KEY.to_string();
    loop {
        let snapshot = store.kv().get(std::slice::from_ref(&key)).await?;
        if let Some(Some(kv)) = snapshot.kvs.into_iter().next() {
            return String::from_utf8(kv.value).map_err(|_| StoreError::Corrupt(format!("{TOKEN_KEY} is not text")));
        }
        // rand's thread generator is a CSPRNG seeded from the OS.
        let secret: [u8; 32] = rand::random();
        let token: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        match store
            .kv()
            .txn(
                Txn::new()
                    .check(&key, Expect::Absent)
                    .put(&key, token.clone().into_bytes()),
            )
            .await
        {
            Ok(_) => return Ok(token),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Equal without telling by timing how much of a guess was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Guards the peer port: only requests with the cluster's token get through.
/// The peer registry (`/v2/`, `peer_registry`) takes it as Basic credentials `berth:TOKEN`,
/// which is how registry clients send a secret.
pub async fn require_token(State(token): State<Arc<String>>, request: Request, next: Next) -> Response {
    let given = request.headers().get(TOKEN_HEADER).map(HeaderValue::as_bytes);
    if given.is_some_and(|g| same_secret(g, token.as_bytes())) {
        return next.run(request).await;
    }
    let registry = request.uri().path().starts_with("/v2/");
    if registry && basic_token(&request).is_some_and(|g| same_secret(&g, token.as_bytes())) {
        return next.run(request).await;
    }
    let mut refused = EngineError::new(
        StatusCode::UNAUTHORIZED,
        "this port is for the cluster's nodes; use the daemon's unix socket (BERTH_HOST)",
    )
    .into_response();
    if registry {
        refused.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"berth\""),
        );
    }
    refused
}

/// The password of `Authorization: Basic base64(berth:PASSWORD)`.
fn basic_token(request: &Request) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let value = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (user, password) = decoded.split_at(decoded.iter().position(|b| *b == b':')?);
    (user == b"berth").then(|| password[1..].to_vec())
}

/// The instance a request path is about, and whether it must run where the instance is:
/// `/v1/instances/{id}` (but reading its record, which any node can) and everything under it.
fn instance_in_path(method: &axum::http::Method, path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v1/instances/")?;
    let (key, tail) = match rest.split_once('/') {
        Some((key, tail)) => (key, Some(tail)),
        None => (rest, None),
    };
    if key.is_empty() || (tail.is_none() && method == axum::http::Method::GET) {
        return None;
    }
    percent_encoding::percent_decode_str(key)
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
}

/// On the unix socket: a client's request is never one another node forwarded, whatever its
/// headers say (only the peer port, behind the token, takes that mark).
pub async fn unmark_forwarded(mut request: Request, next: Next) -> Response {
    request.headers_mut().remove(FORWARDED_HEADER);
    request.headers_mut().remove(PLACEMENT_HEADER);
    next.run(request).await
}

/// Sends requests about another node's instance to that node.
pub async fn route_to_owner(State(engine): State<Arc<Engine>>, request: Request, next: Next) -> Response {
    let Some(membership) = engine.membership.clone() else {
        return next.run(request).await;
    };
    if request.headers().contains_key(FORWARDED_HEADER) {
        return next.run(request).await;
    }
    if request.method() == axum::http::Method::POST && request.uri().path() == "/v1/instances" {
        return place_and_create(engine, request, next).await;
    }
    let Some(key) = instance_in_path(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let owner = match engine.find_anywhere(&key).await {
        Ok(instance) if instance.node != engine.node => instance.node,
        // Here, or unknown: the handler answers.
        _ => return next.run(request).await,
    };
    // The record of an instance on a down node is removed here (`Engine::remove`).
    let removal =
        request.method() == axum::http::Method::DELETE && !request.uri().path()["/v1/instances/".len()..].contains('/');
    if removal
        && membership
            .node(&owner)
            .await
            .is_ok_and(|n| n.state == berth_model::node::NodeState::Down)
    {
        return next.run(request).await;
    }
    forward_to_node(&membership, &owner, &engine.node, request).await
}

/// The largest create body the placement step reads (the create handler's own bound).
const MAX_CREATE_BODY: usize = 2 << 20;

/// `POST /v1/instances` in a cluster: the scheduler picks the node, the request goes there
/// with the choice written into it (`node`), and that node creates the instance.
async fn place_and_create(engine: Arc<Engine>, request: Request, next: Next) -> Response {
    if crate::extract::require_json(request.headers()).is_err() {
        // The handler answers 415.
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_CREATE_BODY).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
            let mut too_large = false;
            while let Some(inner) = cause {
                too_large |= inner.is::<http_body_util::LengthLimitError>();
                cause = inner.source();
            }
            return if too_large {
                EngineError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a create request must be at most {MAX_CREATE_BODY} bytes"),
                )
            } else {
                EngineError::new(StatusCode::BAD_REQUEST, format!("reading the request body: {e}"))
            }
            .into_response();
        }
    };
    let parsed = serde_json::from_slice::<berth_model::api::CreateInstanceRequest>(&bytes);
    let document = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes);
    let (Ok(parsed), Ok(mut document)) = (parsed, document) else {
        // Not a create request: the handler says what is wrong with it.
        return next.run(Request::from_parts(parts, Body::from(bytes))).await;
    };
    let (target, reason) = match engine.place_via_leader(&parsed, &bytes).await {
        Ok(choice) => choice,
        Err(refusal) => return refusal,
    };
    document.insert("node".into(), serde_json::Value::String(target.clone()));
    let body = match serde_json::to_vec(&document) {
        Ok(body) => body,
        Err(e) => return EngineError::internal(format!("placing the instance: {e}")).into_response(),
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts
        .headers
        .insert(axum::http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Ok(value) = HeaderValue::from_str(&reason) {
        parts.headers.insert(PLACEMENT_HEADER, value);
    }
    let request = Request::from_parts(parts, Body::from(body));
    tracing::info!(node = %target, %reason, "placed a new instance");
    if target == engine.node {
        return next.run(request).await;
    }
    let Some(membership) = engine.membership.clone() else {
        return next.run(request).await;
    };
    forward_to_node(&membership, &target, &engine.node, request).await
}

/// Passes `request` to node `name` (where it advertises itself), answering what it answers
/// or why it cannot be reached.
async fn forward_to_node(membership: &Membership, name: &str, from: &str, request: Request) -> Response {
    match membership.peer_address(name).await {
        Ok(address) => forward(address, membership.token(), from, request)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Err(e) => e.into_response(),
    }
}

/// Passes `request` to the node at `address` and its answer back; an upgraded answer (attach,
/// exec) becomes a byte pipe between the client and that node.
pub async fn forward(address: SocketAddr, token: &str, from: &str, mut request: Request) -> EngineResult<Response> {
    let unreachable = |e: &dyn std::fmt::Display| {
        EngineError::new(
            StatusCode::BAD_GATEWAY,
            format!("cannot reach node at {address} for this request: {e}; `berth node ls` shows its state"),
        )
    };
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .map_err(|_| unreachable(&"no answer within 5 s"))?
    .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| unreachable(&"no handshake within 5 s"))?
    .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "forwarded connection ended");
        }
    });
    let client_upgrade = hyper::upgrade::on(&mut request);
    let headers = request.headers_mut();
    headers.insert(
        TOKEN_HEADER,
        HeaderValue::from_str(token).map_err(|e| EngineError::internal(format!("cluster token: {e}")))?,
    );
    headers.insert(
        FORWARDED_HEADER,
        HeaderValue::from_str(from).map_err(|e| EngineError::internal(format!("node name: {e}")))?,
    );
    let mut response = sender.send_request(request).await.map_err(|e| unreachable(&e))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let peer_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, peer_upgrade) {
                Ok((client, peer)) => {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(peer)).await;
                }
                Err(e) => tracing::debug!(error = %e, "forwarded upgrade failed"),
            }
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    Ok(response.map(Body::new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn instance_paths_name_their_instance() {
        assert_eq!(
            instance_in_path(&Method::POST, "/v1/instances/web/stop").as_deref(),
            Some("web")
        );
        assert_eq!(
            instance_in_path(&Method::DELETE, "/v1/instances/web").as_deref(),
            Some("web")
        );
        assert_eq!(
            instance_in_path(&Method::GET, "/v1/instances/web/logs").as_deref(),
            Some("web")
        );
        assert_eq!(instance_in_path(&Method::GET, "/v1/instances/web"), None);
        assert_eq!(instance_in_path(&Method::GET, "/v1/instances"), None);
        assert_eq!(instance_in_path(&Method::POST, "/v1/volumes/x"), None);
        assert_eq!(
            instance_in_path(&Method::POST, "/v1/instances/a%20b/kill").as_deref(),
            Some("a b")
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
    }
}
