//! A closed-loop load generator: C workers each send one request at a time for a duration.

use reqwest::header::{HeaderMap, HeaderValue};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One request shape, ready to send.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Arc<Vec<u8>>,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub latencies_us: Vec<u64>,
    pub first_byte_us: Vec<u64>,
    /// HTTP statuses of failed requests (0: no response), to tell overload from refusal.
    pub error_statuses: std::collections::BTreeMap<u16, u64>,
}

impl Stats {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }

    /// A percentile of full-response latency in milliseconds.
    pub fn pct(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }

    /// A percentile of time-to-first-byte in milliseconds.
    pub fn ttfb(&self, p: f64) -> f64 {
        percentile(&self.first_byte_us, p)
    }
}

fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    sorted_us[i.min(sorted_us.len() - 1)] as f64 / 1000.0
}

/// Runs `concurrency` workers against `target` for `duration`.
pub async fn run(
    client: &reqwest::Client,
    target: &Target,
    concurrency: usize,
    duration: Duration,
) -> Stats {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut s = Stats::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let sent = client
                    .post(&target.url)
                    .headers(target.headers.clone())
                    .body(target.body.as_ref().clone())
                    .send()
                    .await;
                let Ok(mut resp) = sent else {
                    s.errors += 1;
                    *s.error_statuses.entry(0).or_default() += 1;
                    continue;
                };
                let status = resp.status().as_u16();
                let ok = resp.status().is_success();
                let mut first = None;
                let mut bytes = 0usize;
                while let Ok(Some(chunk)) = resp.chunk().await {
                    if first.is_none() {
                        first = Some(t0.elapsed());
                    }
                    bytes += chunk.len();
                }
                if !ok || bytes == 0 {
                    s.errors += 1;
                    *s.error_statuses.entry(status).or_default() += 1;
                    continue;
                }
                s.requests += 1;
                s.latencies_us.push(t0.elapsed().as_micros() as u64);
                s.first_byte_us
                    .push(first.unwrap_or_default().as_micros() as u64);
            }
            s
        }));
    }
    let mut total = Stats::default();
    for w in workers {
        let s = w.await.expect("worker");
        total.requests += s.requests;
        total.errors += s.errors;
        for (k, v) in s.error_statuses {
            *total.error_statuses.entry(k).or_default() += v;
        }
        total.latencies_us.extend(s.latencies_us);
        total.first_byte_us.extend(s.first_byte_us);
    }
    total.seconds = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    total.first_byte_us.sort_unstable();
    total
}

/// Headers for an MCP POST.
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "accept",
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    for (k, v) in pairs {
        h.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// Like [`run`], but paced so that all workers together offer `rate` requests per second.
pub async fn run_paced(
    client: &reqwest::Client,
    target: &Target,
    concurrency: usize,
    duration: Duration,
    rate: f64,
) -> Stats {
    let interval = Duration::from_secs_f64(concurrency as f64 / rate.max(1.0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            let mut s = Stats::default();
            let mut next = Instant::now() + interval.mul_f64(w as f64 / concurrency as f64);
            while Instant::now() < deadline {
                tokio::time::sleep_until(next.into()).await;
                next += interval;
                let t0 = Instant::now();
                match client
                    .post(&target.url)
                    .headers(target.headers.clone())
                    .body(target.body.as_ref().clone())
                    .send()
                    .await
                {
                    Ok(resp) if resp.status().is_success() => {
                        if resp.bytes().await.is_ok() {
                            s.requests += 1;
                            s.latencies_us.push(t0.elapsed().as_micros() as u64);
                        } else {
                            s.errors += 1;
                        }
                    }
                    _ => s.errors += 1,
                }
            }
            s
        }));
    }
    let mut total = Stats::default();
    for w in workers {
        let s = w.await.expect("worker");
        total.requests += s.requests;
        total.errors += s.errors;
        total.latencies_us.extend(s.latencies_us);
    }
    total.seconds = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    total
}
