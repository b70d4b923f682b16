//! The call path's own HTTP/1.1 client for plain-`http` upstreams: hyper's pooled client,
//! without reqwest's layers. A profile of the plain call path (`docs/performance.md`, issue 16)
//! found about a fifth of its instructions in those layers (a redirect policy that re-parses
//! the URL although redirects are off, a retry policy that clones the request, the proxy
//! matcher, large futures moved through its service stack). Only calls whose answer is read
//! by the call's own reader (`post_streamed`) go this way; everything else, `https`
//! upstreams, and any upstream when a proxy is configured in the environment (reqwest honours
//! it; this client does not) keep reqwest. The response is handed on as a `reqwest::Response`,
//! so that everything that reads answers reads both alike.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Environment variables through which reqwest picks up a proxy.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
];

/// A pooled HTTP/1.1 client of one plain-`http` upstream URL.
pub struct Direct {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: http::Uri,
}

impl Direct {
    /// The client for `url`, when it may be used: a plain-`http` URL and no proxy configured.
    pub fn for_url(url: &reqwest::Url, connect_timeout: Duration) -> Option<Direct> {
        if url.scheme() != "http"
            || PROXY_VARIABLES
                .iter()
                .any(|v| std::env::var_os(v).is_some())
        {
            return None;
        }
        let uri = url.as_str().parse::<http::Uri>().ok()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build(connector);
        Some(Direct { client, uri })
    }

    /// POSTs `body` with `headers`; any status is a response.
    pub async fn post(
        &self,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, DirectError> {
        let mut req = http::Request::post(self.uri.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| DirectError::Request)?;
        *req.headers_mut() = headers;
        let resp = self.client.request(req).await.map_err(DirectError::Http)?;
        Ok(reqwest::Response::from(resp.map(reqwest::Body::wrap)))
    }
}

/// Why a request through [`Direct`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// The request could not be built.
    #[error("the request could not be sent")]
    Request,
    /// Connecting, sending or reading the head failed.
    #[error("{}", describe(.0))]
    Http(hyper_util::client::legacy::Error),
}

/// A client error described as [`super::describe`] describes reqwest's (never with the URL).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else {
        "HTTP error"
    };
    super::with_root_cause(kind, e)
}
