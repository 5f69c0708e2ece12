//! In a cluster the scheduler runs on the leader (`failover::Membership::lead`): the node that
//! receives `POST /v1/instances` asks the leader where the instance goes
//! (`POST /v1/cluster/place` on the leader's peer port, the create request as its body), and
//! the leader places one request at a time, so two placements a moment apart always see each
//! other's choice. The other nodes stand by. When the leader cannot be reached (it is going
//! down, or there is none for the moment) the receiving node places it itself; the target
//! node's admission stays the final check either way.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{EngineError, EngineResult};

/// The leader's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Placement {
    pub node: String,
    pub reason: String,
}

/// The leader's placements, one at a time.
static PLACING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The peer port's placement endpoint (behind the cluster's token).
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new().route("/v1/cluster/place", post(place)).with_state(engine)
}

async fn place(
    State(engine): State<Arc<Engine>>,
    Json(request): Json<berth_model::api::CreateInstanceRequest>,
) -> EngineResult<Json<Placement>> {
    let _one_at_a_time = PLACING.lock().await;
    let (node, reason) = engine.choose_node(&request).await?;
    tracing::info!(%node, %reason, "placed for another node");
    Ok(Json(Placement { node, reason }))
}

impl Engine {
    /// Where a new instance goes and why: the leader's choice, or this node's own when the
    /// leader is this node or cannot be reached.
    pub async fn place_via_leader(
        &self,
        request: &berth_model::api::CreateInstanceRequest,
        body: &[u8],
    ) -> Result<(String, String), Response> {
        let Some(membership) = self.membership.clone() else {
            return self.choose_node(request).await.map_err(IntoResponse::into_response);
        };
        let leader = membership.leader().await.ok().flatten();
        let Some(leader) = leader.filter(|l| *l != self.node) else {
            let _one_at_a_time = PLACING.lock().await;
            return self.choose_node(request).await.map_err(IntoResponse::into_response);
        };
        match self.ask_leader(&membership, &leader, body).await {
            Ok(Ok(placement)) => Ok((placement.node, placement.reason)),
            // The leader's refusal ("0/3 nodes fit: ...") is the answer.
            Ok(Err(refusal)) => Err(refusal),
            Err(e) => {
                tracing::warn!(%leader, error = %e.message, "the scheduler's leader cannot be reached; placing here");
                self.choose_node(request).await.map_err(IntoResponse::into_response)
            }
        }
    }

    /// `Ok(Ok)`: the leader placed it; `Ok(Err)`: the leader refused, with its answer; `Err`:
    /// the leader could not be asked.
    async fn ask_leader(
        &self,
        membership: &crate::cluster::Membership,
        leader: &str,
        body: &[u8],
    ) -> EngineResult<Result<Placement, Response>> {
        let address = membership.peer_address(leader).await?;
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/cluster/place")
            .header(header::HOST, address.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body.to_vec()))
            .map_err(|e| EngineError::internal(e.to_string()))?;
        let response = crate::peers::forward(address, membership.token(), &self.node, request).await?;
        let status = response.status();
        if status == StatusCode::BAD_GATEWAY || status == StatusCode::NOT_FOUND || status.is_server_error() {
            return Err(EngineError::new(status, format!("the leader answered {status}")));
        }
        if !status.is_success() {
            return Ok(Err(response));
        }
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 10)
            .await
            .map_err(|e| EngineError::internal(format!("reading the leader's placement: {e}")))?;
        serde_json::from_slice(&bytes)
            .map(Ok)
            .map_err(|e| EngineError::internal(format!("the leader's placement: {e}")))
    }
}
