//! The HTTPS client of the network roles and the device agent: reqwest over a preconfigured
//! rustls client configuration (ring; trusting the CI root; optionally presenting a client
//! certificate), HTTPS only. Responses are read with a size bound, and an error status with a
//! problem document becomes [`Error::Problem`].

use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::CertificateDer;
use serde::de::DeserializeOwned;

use crate::problem::{Problem, is_problem_json};
use crate::tls::{Identity, ServerRole, client_config};
use crate::{Error, Result};

/// Default bound on a response body read by [`json`] and [`check`].
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// A client builder trusting `roots`, accepting only a server of `server` role, presenting
/// `identity` when given (mutual TLS), refusing plain HTTP and ignoring proxy environment
/// variables, with TCP_NODELAY (a request's head and body would otherwise wait on the
/// server's delayed ACK); callers may adjust timeouts before `build()`.
pub fn client_builder(
    roots: &[CertificateDer<'static>],
    identity: Option<&Identity>,
    server: &ServerRole,
) -> Result<reqwest::ClientBuilder> {
    let tls = client_config(roots, identity, server)?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60)))
}

/// [`client_builder`], built.
pub fn client(
    roots: &[CertificateDer<'static>],
    identity: Option<&Identity>,
    server: &ServerRole,
) -> Result<reqwest::Client> {
    Ok(client_builder(roots, identity, server)?.build()?)
}

/// Passes a success response through; turns an error response into [`Error::Problem`] when it
/// carries a problem document, else into [`Error::Status`].
pub async fn check(response: reqwest::Response) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if !is_problem_json(response.headers()) {
        return Err(Error::Status { status: status.as_u16() });
    }
    let body = read_limited(response, MAX_RESPONSE_BYTES).await?;
    match serde_json::from_slice::<Problem>(&body) {
        Ok(mut problem) => {
            if problem.status == 0 {
                problem.status = status.as_u16();
            }
            Err(Error::Problem(problem))
        }
        Err(_) => Err(Error::Status { status: status.as_u16() }),
    }
}

/// [`check`]s the response, then decodes its JSON body (at most [`MAX_RESPONSE_BYTES`]).
pub async fn json<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
    let body = read_limited(check(response).await?, MAX_RESPONSE_BYTES).await?;
    serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()))
}

/// Reads a response body, failing as soon as it exceeds `limit` bytes, whatever the server
/// announced.
pub async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Bytes> {
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(Error::ResponseTooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(Error::ResponseTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}
