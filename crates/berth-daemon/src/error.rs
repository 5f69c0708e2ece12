//! Errors of the engine, each with the HTTP status the API answers with. Messages are
//! one line a user can act on; `field` names the request field at fault.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_image::ImageError;
use berth_model::api::ErrorResponse;
use berth_model::driver::DriverError;
use berth_store::StoreError;

#[derive(Debug)]
pub struct EngineError {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<String>,
}

pub type EngineResult<T> = Result<T, EngineError>;

impl EngineError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        EngineError {
            status,
            message: message.into(),
            field: None,
        }
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        EngineError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            field: Some(field.to_string()),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    /// A well-formed value that the current state refuses (a subnet in use, a container
    /// where a VM is needed), naming the field.
    pub fn conflict_in(field: &str, message: impl Into<String>) -> Self {
        EngineError {
            status: StatusCode::CONFLICT,
            message: message.into(),
            field: Some(field.to_string()),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// A host path in a request that names nothing (404, naming the field).
    pub fn no_such_path(field: &str, path: &str) -> Self {
        EngineError {
            status: StatusCode::NOT_FOUND,
            message: format!("{path} does not exist on the daemon's host"),
            field: Some(field.to_string()),
        }
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<StoreError> for EngineError {
    fn from(err: StoreError) -> Self {
        let status = match &err {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::NameTaken(_)
            | StoreError::Ambiguous(_)
            | StoreError::AlreadyExists { .. }
            | StoreError::Conflict { .. } => StatusCode::CONFLICT,
            StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            StoreError::InvalidKey(_) => StatusCode::BAD_REQUEST,
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut error = EngineError::new(status, err.to_string());
        if matches!(err, StoreError::NameTaken(_)) {
            error.field = Some("name".into());
        }
        error
    }
}

impl From<ImageError> for EngineError {
    fn from(err: ImageError) -> Self {
        let status = match &err {
            ImageError::NotFound(_) | ImageError::NotAReference { .. } => StatusCode::NOT_FOUND,
            ImageError::InvalidReference { .. } | ImageError::Hostile(_) | ImageError::Format(_) => {
                StatusCode::BAD_REQUEST
            }
            ImageError::DigestMismatch { .. } => StatusCode::BAD_REQUEST,
            // Not the request's size (413): what a registry or an archive holds.
            ImageError::TooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ImageError::InUse(..) | ImageError::AmbiguousId(_) => StatusCode::CONFLICT,
            ImageError::Registry(_) => StatusCode::BAD_GATEWAY,
            ImageError::Io { .. } | ImageError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        EngineError::new(status, err.to_string())
    }
}

impl From<DriverError> for EngineError {
    fn from(err: DriverError) -> Self {
        match err {
            DriverError::Invalid { field, message } => EngineError::invalid(&field, message),
            other => EngineError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            message: self.message,
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}
