//! Errors as Docker clients expect them: a status code they act on (404 makes `docker run`
//! pull, 304 means "already so", 409 a conflict) and `{"message": "..."}`, which the CLI
//! prints after "Error response from daemon:".

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_client::ClientError;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DockerError {
    pub status: StatusCode,
    pub message: String,
}

pub type DockerResult<T> = Result<T, DockerError>;

impl DockerError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        DockerError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// An option a client set that berth cannot honour: refused, never dropped, so nobody
    /// believes a container got what it did not.
    pub fn unsupported(option: &str, why: &str) -> Self {
        Self::bad_parameter(format!("berth does not support {option}: {why}"))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// berth's 404 in Docker's words for a container ("No such container: web"), which some
    /// clients match on.
    pub fn for_container(self, name: &str) -> Self {
        if self.status == StatusCode::NOT_FOUND {
            Self::not_found(format!("No such container: {name}"))
        } else {
            self
        }
    }

    pub fn for_image(self, name: &str) -> Self {
        if self.status == StatusCode::NOT_FOUND {
            Self::not_found(format!("No such image: {name}"))
        } else {
            self
        }
    }
}

impl From<ClientError> for DockerError {
    fn from(error: ClientError) -> Self {
        match error {
            // berth's own status codes already follow Docker's (404, 409, 400, 500).
            ClientError::Api { status, message, .. } => DockerError::new(status, message),
            other => DockerError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for DockerError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, message = %self.message, "docker API request failed");
        } else {
            tracing::debug!(status = %self.status, message = %self.message, "docker API request refused");
        }
        if self.status == StatusCode::NOT_MODIFIED {
            // 304 carries no body.
            return self.status.into_response();
        }
        (self.status, axum::Json(serde_json::json!({ "message": self.message }))).into_response()
    }
}
