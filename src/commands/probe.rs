//! `gatehouse probe URL`: a health check for images without curl (the container's
//! `HEALTHCHECK`). It succeeds only on a 2xx answer within the timeout.

use std::time::Duration;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not an http(s) URL.
    #[error("{0}: expected an http:// or https:// URL")]
    Url(String),
    /// No answer: refused, timed out, TLS failure.
    #[error("{url}: no answer: {reason}")]
    Unreachable {
        /// The URL probed.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// An answer that is not a 2xx.
    #[error("{url}: answered {status}")]
    Status {
        /// The URL probed.
        url: String,
        /// Its status.
        status: u16,
    },
}

/// GETs `url` once and returns its status when it is a 2xx.
pub async fn probe(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let parsed = url::Url::parse(url).map_err(|_| ProbeError::Url(url.to_owned()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ProbeError::Url(url.to_owned()));
    }
    let unreachable = |e: reqwest::Error| ProbeError::Unreachable {
        url: url.to_owned(),
        // The chain says why (connection refused, timeout), the top error only "error sending".
        reason: std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": "),
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        // A probe of the local listener must not go through a proxy from the environment.
        .no_proxy()
        .build()
        .map_err(unreachable)?;
    let status = client
        .get(parsed)
        .send()
        .await
        .map_err(unreachable)?
        .status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(ProbeError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        })
    }
}
