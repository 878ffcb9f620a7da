//! The load generator's HTTP client: blocking `ureq` on tokio's blocking pool, bounded in time.

use std::time::Duration;

use super::LoadgenError;

/// An HTTP response, as the load generator sees it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Location` header.
    pub location: Option<String>,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// Body text.
    pub body: String,
}

/// Longest an HTTP request of the load generator may take, connect to end of body.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP request (blocking client, run on tokio's blocking pool). Non-2xx statuses are returned,
/// not errors; a request taking longer than [`HTTP_TIMEOUT`] fails.
///
/// # Errors
/// [`LoadgenError::Http`] when the connection fails or times out.
pub async fn http(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<HttpResponse, LoadgenError> {
    http_auth(method, url, content_type, body, None).await
}

/// [`http`] with an `Authorization: Bearer` token.
///
/// # Errors
/// [`LoadgenError::Http`] when the connection fails.
pub async fn http_auth(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    token: Option<&str>,
) -> Result<HttpResponse, LoadgenError> {
    let (method, url, ct) = (method.to_string(), url.to_string(), content_type.map(str::to_string));
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        // Bounded, so a wedged server fails a join or a leave instead of hanging the run.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .build()
            .new_agent();
        let mut req = ureq::http::Request::builder().method(method.as_str()).uri(&url);
        if let Some(c) = &ct {
            req = req.header("content-type", c);
        }
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(body).map_err(|e| LoadgenError::Http(e.to_string()))?;
        let mut resp = agent.run(req).map_err(|e| LoadgenError::Http(e.to_string()))?;
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (location, content_type) = (header("location"), header("content-type"));
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Ok(HttpResponse { status: resp.status().as_u16(), location, content_type, body })
    })
    .await
    .map_err(|e| LoadgenError::Http(e.to_string()))?
}
