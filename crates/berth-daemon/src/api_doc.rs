//! The parts of the API's OpenAPI description that handlers share: the document's header,
//! the error responses each operation lists by status (all with berth's `ErrorResponse`
//! body), and the parameters that several paths take.

use std::collections::BTreeMap;

use berth_model::api::ErrorResponse;
use serde::Deserialize;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoParams, IntoResponses, OpenApi, ToSchema};

/// The document's header; `api::description` adds every route to it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "berth API",
        version = "1",
        description = "The berth daemon's REST API on its unix socket (default /run/berth/berth.sock). Attach streams upgrade the connection (`Upgrade: berth-attach`) and then carry frames: a 5-byte header (kind u8: 0 stdin, 1 stdout, 2 stderr, 3 exit JSON, 4 resize rows/cols u16 BE, 5 stdin closed, 6 error; length u32 BE) and the payload. Logs are the same frames without an upgrade. Every error is an `ErrorResponse` (application/json) whose `field` names the request field at fault."
    ),
    components(schemas(ErrorResponse))
)]
pub struct ApiDoc;

fn error_response(status: u16, description: &str) -> BTreeMap<String, RefOr<Response>> {
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorResponse")))
        .build();
    let response = ResponseBuilder::new()
        .description(description)
        .content("application/json", body)
        .build();
    BTreeMap::from([(status.to_string(), RefOr::T(response))])
}

/// Declares a status an operation can answer with berth's error body.
macro_rules! error_status {
    ($(#[$doc:meta])* $name:ident, $status:literal, $description:literal) => {
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                error_response($status, $description)
            }
        }
    };
}

error_status!(
    /// Every operation with a query string, a path to check or a body.
    BadRequest,
    400,
    "A parameter or body field that does not fit (`field` names it), or a combination the operation refuses"
);
error_status!(
    NotFound,
    404,
    "No such instance, image, volume, network or snapshot (the message says which and how to list them)"
);
error_status!(
    /// State conflicts: running, in use, a name taken, an ambiguous id prefix, admission.
    Conflict,
    409,
    "What is asked conflicts with the current state (running, in use, a name taken, an ambiguous id prefix, not enough capacity); the message says what to do"
);
error_status!(
    ImageTooLarge,
    422,
    "What a registry or an archive holds exceeds the daemon's [images] limits"
);
error_status!(
    /// Operations with a JSON body.
    UnsupportedMediaType,
    415,
    "The body is not application/json"
);
error_status!(
    /// The host failed: the store, the file system, a program berth runs.
    InternalError,
    500,
    "The host failed to do it (the state store, the file system, a program berth runs); the message says what failed"
);
error_status!(BadGateway, 502, "A server berth depends on failed (an NFS server)");
error_status!(
    /// Cluster operations: etcd members down or without quorum.
    ServiceUnavailable,
    503,
    "The cluster's state store (etcd) cannot be reached; the message says which members failed"
);

/// `{id}`: which instance.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InstancePath {
    /// The instance's id, a unique prefix of it, or its name.
    pub id: String,
}

/// `{name}` of a volume.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VolumePath {
    /// The volume's name.
    pub name: String,
}

/// `{name}` of a node.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NodePath {
    /// The node's name (`berth node ls`).
    pub name: String,
}

/// `{name}` of a project.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProjectPath {
    /// The project's name.
    pub name: String,
}

/// `{name}` of a trusted client.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TrustPath {
    /// The client's name or its certificate's fingerprint.
    pub name: String,
}

/// `{name}` of a network.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NetworkPath {
    /// The network's name.
    pub name: String,
}

/// `POST /v1/nodes/{name}/drain`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DrainParams {
    /// Instances moved at once (default 1).
    #[param(minimum = 1, maximum = 32)]
    pub parallel: Option<u32>,
}

/// `POST /v1/cluster/rebalance`
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RebalanceParams {
    /// Plan only: say what would move.
    pub dry_run: Option<bool>,
    /// Points above the cluster's mean load that make a node hot (default 20).
    #[param(minimum = 0, maximum = 100)]
    pub threshold_percent: Option<f64>,
}

/// `{name}`: a stack's name.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct StackPath {
    /// The stack's name.
    #[param(pattern = "^[a-zA-Z0-9][a-zA-Z0-9_-]{0,39}$")]
    pub name: String,
}

/// `{snapshot}`: a snapshot's name.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SnapshotPath {
    /// The snapshot's name.
    pub snapshot: String,
}

/// The one value of the `Upgrade` header that asks for an attach stream.
#[derive(Debug, ToSchema)]
pub enum AttachUpgrade {
    #[schema(rename = "berth-attach")]
    BerthAttach,
}

#[cfg(test)]
mod tests {
    #[test]
    fn docs_openapi_json_is_the_description_the_routes_make() {
        let generated = crate::api::description().to_pretty_json().expect("JSON");
        let committed = include_str!("../../../docs/openapi.json");
        assert!(
            generated.trim_end() == committed.trim_end(),
            "docs/openapi.json is not what the handlers describe: run `berth openapi > docs/openapi.json`"
        );
    }
}
