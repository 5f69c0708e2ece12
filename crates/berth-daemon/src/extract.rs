//! Request extractors for the API: a query string or JSON body that does not decode gets
//! berth's error body — a 400 with one line and the field at fault — instead of axum's
//! plain-text rejection. `Json` also serves as the response wrapper, like axum's.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{EngineError, EngineResult};

/// A query string decoded into `T`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = EngineError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Query)
            .map_err(|e| field_error("query parameter", e))
    }
}

/// A JSON request body decoded into `T`, or a JSON response.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = EngineError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json(request.headers())?;
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|e| EngineError::invalid("body", format!("reading the request body: {}", e.body_text())))?;
        parse_json(&body).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Refuses a body declared as anything but JSON (no Content-Type is taken as JSON).
pub fn require_json(headers: &HeaderMap) -> EngineResult<()> {
    let declared = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase());
    match declared {
        Some(declared) if !declared.starts_with("application/json") => Err(EngineError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the body is {declared}; send application/json"),
        )),
        _ => Ok(()),
    }
}

/// Decodes a JSON body, naming the field that does not fit (`limits.memory_bytes`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> EngineResult<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| field_error("request field", e))?;
    deserializer
        .end()
        .map_err(|e| EngineError::invalid("body", format!("invalid request body: {e}")))?;
    Ok(value)
}

fn field_error<E: std::fmt::Display>(what: &str, error: serde_path_to_error::Error<E>) -> EngineError {
    let path = error.path().to_string();
    let inner = error.into_inner().to_string();
    // An unknown field may be reported at its parent; name the field itself.
    let unknown = inner
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    let field = match (path.as_str(), unknown) {
        (".", Some(name)) => name,
        (".", None) => "body".to_string(),
        (parent, Some(name)) if parent != name && !parent.ends_with(&format!(".{name}")) => {
            format!("{parent}.{name}")
        }
        (path, _) => path.to_string(),
    };
    EngineError::invalid(&field, format!("{what} {field}: {inner}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_model::api::{CreateInstanceRequest, LogsParams};

    #[test]
    fn bodies_name_the_field_at_fault() {
        let error = parse_json::<CreateInstanceRequest>(br#"{"image":"x","limits":{"pids":-1}}"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("limits.pids"));
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        let error = parse_json::<CreateInstanceRequest>(br#"{"image":"x","bogus":1}"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("bogus"));
        let error = parse_json::<CreateInstanceRequest>(br#"{"image":"x","disk_bytes":1e40}"#).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("disk_bytes"));
        assert!(parse_json::<CreateInstanceRequest>(br#"{"image":"x"} trailing"#).is_err());
    }

    #[test]
    fn query_strings_name_the_parameter() {
        let parse = |query: &str| {
            let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
            serde_path_to_error::deserialize::<_, LogsParams>(deserializer)
                .map_err(|e| field_error("query parameter", e))
        };
        let error = parse("tail=99999999999999999999999").err().unwrap();
        assert_eq!(error.field.as_deref(), Some("tail"));
        assert!(error.message.starts_with("query parameter tail: "), "{}", error.message);
        assert_eq!(parse("tail=5&follow=true").ok().unwrap().tail, Some(5));
    }
}
