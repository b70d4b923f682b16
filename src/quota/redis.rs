//! Quota counters in Redis, shared by every replica. One Lua script per request decides and
//! takes from all of the request's counters atomically, on Redis's clock (replicas' clocks
//! never disagree about a bucket); a refusal takes nothing. Concurrent calls are leases in a
//! sorted set, so a replica that dies holding some frees them after the lease.

use super::{Check, Counter, Full, StoreError};
use crate::config::quotas::RedisQuotas;
use crate::telemetry::metrics::METRICS;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// KEYS: one per counter. ARGV: three per counter (kind, a, b), then the caller's lease id.
/// Returns `{0, 0}` when everything was taken, or `{i, wait_us}` for the first counter `i`
/// (1-based) without room, having taken nothing.
const TAKE: &str = r"
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local n = #KEYS
local member = ARGV[3 * n + 1]
local undo = {}
for i = 1, n do
  local kind = ARGV[3 * i - 2]
  local a = tonumber(ARGV[3 * i - 1])
  local b = tonumber(ARGV[3 * i])
  local key = KEYS[i]
  local wait = 0
  if kind == 'r' then
    local old = redis.call('GET', key)
    local tat = tonumber(old or now_us)
    if tat < now_us then tat = now_us end
    if now_us < tat - b then
      wait = tat - b - now_us
    else
      local new = tat + a
      redis.call('SET', key, string.format('%.0f', new), 'PX', math.ceil((new - now_us) / 1000) + 1000)
      undo[i] = old or false
    end
  elseif kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
    if redis.call('ZCARD', key) >= a then
      wait = -1
    else
      redis.call('ZADD', key, now_ms + b, member)
      redis.call('PEXPIRE', key, b)
    end
  else
    local used = tonumber(redis.call('GET', key) or '0')
    if used >= a then
      wait = -1
    else
      redis.call('INCR', key)
      redis.call('EXPIRE', key, b)
    end
  end
  if wait ~= 0 then
    for j = 1, i - 1 do
      local k = ARGV[3 * j - 2]
      if k == 'r' then
        if undo[j] then redis.call('SET', KEYS[j], undo[j], 'KEEPTTL') else redis.call('DEL', KEYS[j]) end
      elseif k == 'c' then
        redis.call('ZREM', KEYS[j], member)
      else
        redis.call('DECR', KEYS[j])
      end
    end
    return {i, wait}
  end
end
return {0, 0}
";

/// Seconds a daily counter outlives its day (clocks of replicas differ a little).
const DAILY_TTL_SECS: u64 = 2 * 86_400;
/// Least time between two connection attempts while Redis is down.
const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Shared {
    client: ::redis::Client,
    prefix: String,
    timeout: Duration,
    script: ::redis::Script,
    /// The connection, once made (it reconnects by itself afterwards): read without a lock.
    conn: arc_swap::ArcSwapOption<::redis::aio::ConnectionManager>,
    /// Held while a first connection is attempted, with when the last attempt began.
    connecting: Mutex<Option<tokio::time::Instant>>,
}

impl Shared {
    /// The client; the connection is made at first use (Redis may start after the gateway).
    pub fn start(config: &RedisQuotas) -> Result<Shared, String> {
        let url = config
            .url
            .resolve()
            .map_err(|e| format!("quotas.redis.url: {e}"))?;
        let client =
            ::redis::Client::open(url.expose()).map_err(|e| format!("quotas.redis.url: {e}"))?;
        METRICS.quota_store_up.set(0);
        Ok(Shared {
            client,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout.0,
            script: ::redis::Script::new(TAKE),
            conn: arc_swap::ArcSwapOption::empty(),
            connecting: Mutex::new(None),
        })
    }

    /// A random id for one request's leases.
    pub fn member(&self) -> String {
        let mut id = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        crate::hex::encode(&id)
    }

    fn mark(&self, up: bool) {
        METRICS.quota_store_up.set(i64::from(up));
    }

    async fn connection(&self) -> Result<::redis::aio::ConnectionManager, StoreError> {
        if let Some(c) = &*self.conn.load() {
            return Ok((**c).clone());
        }
        let mut last = self.connecting.lock().await;
        if let Some(c) = &*self.conn.load() {
            return Ok((**c).clone());
        }
        if last.is_some_and(|at| at.elapsed() < RECONNECT_INTERVAL) {
            return Err(StoreError::Redis("not connected".into()));
        }
        *last = Some(tokio::time::Instant::now());
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(RECONNECT_INTERVAL);
        match tokio::time::timeout(
            self.timeout,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        {
            Ok(Ok(c)) => {
                self.conn.store(Some(Arc::new(c.clone())));
                Ok(c)
            }
            Ok(Err(e)) => Err(StoreError::Redis(e.to_string())),
            Err(_) => Err(StoreError::Redis(format!(
                "no connection within {:?}",
                self.timeout
            ))),
        }
    }

    /// Takes from every counter in one script, or from none.
    pub async fn take(
        &self,
        counters: &[Counter],
        member: &str,
    ) -> Result<Option<Full>, StoreError> {
        let mut conn = match self.connection().await {
            Ok(c) => c,
            Err(e) => {
                self.mark(false);
                return Err(e);
            }
        };
        let mut call = self.script.prepare_invoke();
        for c in counters {
            call.key(format!("{}{}", self.prefix, c.key));
        }
        for c in counters {
            match c.check {
                Check::Rate {
                    interval_us,
                    tolerance_us,
                } => call.arg("r").arg(interval_us).arg(tolerance_us),
                Check::Concurrent { limit, lease_ms } => call.arg("c").arg(limit).arg(lease_ms),
                Check::Daily { limit, .. } => call.arg("d").arg(limit).arg(DAILY_TTL_SECS),
            };
        }
        call.arg(member);
        let answer: Result<Result<(i64, i64), _>, _> =
            tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await;
        match answer {
            Ok(Ok((0, _))) => {
                self.mark(true);
                Ok(None)
            }
            Ok(Ok((i, wait))) => {
                self.mark(true);
                Ok(Some(Full {
                    index: (i - 1).max(0) as usize,
                    wait: Duration::from_micros(wait.max(0) as u64),
                }))
            }
            Ok(Err(e)) => {
                self.mark(false);
                Err(StoreError::Redis(e.to_string()))
            }
            Err(_) => {
                self.mark(false);
                Err(StoreError::Redis(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            }
        }
    }

    /// Gives back a finished call's leases, in the background (the response is not held
    /// for it; a lease that cannot be given back expires).
    pub fn release(self: &Arc<Self>, keys: Vec<String>, member: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            let Ok(mut conn) = this.connection().await else {
                return;
            };
            let mut pipe = ::redis::pipe();
            for k in &keys {
                pipe.cmd("ZREM")
                    .arg(format!("{}{k}", this.prefix))
                    .arg(&member)
                    .ignore();
            }
            let done: Result<Result<(), _>, _> =
                tokio::time::timeout(this.timeout, pipe.query_async(&mut conn)).await;
            if !matches!(done, Ok(Ok(()))) {
                tracing::debug!("quota leases not given back; they expire");
            }
        });
    }

    /// Whether Redis answers a PING now.
    pub async fn ping(&self) -> bool {
        let Ok(mut conn) = self.connection().await else {
            self.mark(false);
            return false;
        };
        let pong: Result<Result<String, _>, _> =
            tokio::time::timeout(self.timeout, ::redis::cmd("PING").query_async(&mut conn)).await;
        let up = matches!(pong, Ok(Ok(_)));
        self.mark(up);
        up
    }
}
