//! Flags in Redis: `SET <prefix><name> <value as JSON>`.
//!
//! # Writing and recording the previous value
//!
//! A write is `SET key value GET` (Redis >= 6.2): the previous value comes
//! back atomically with the write, so what this process restores on unwind is
//! exactly what was there the instant before its write, even with another
//! writer racing it.
//!
//! The journal must hold the previous value before the change can be
//! observed, or a crash just after the write would leave a resumed run with
//! nothing to restore (its re-run of the step would see its own value as
//! "previous"). So [`RedisFlags::set`] first reads the key with `GET` and
//! hands that value to `record` (the engine journals it as `FlagPrevious`,
//! durably, before `record` returns), and only then writes with `SET .. GET`:
//!
//! - no crash: the value `SET .. GET` returned is the step's `previous`
//!   output and what the automatic rollback restores. It equals the recorded
//!   one unless someone else wrote the key between the two commands; then
//!   the atomic one is the right one, and it is recorded too.
//! - crash after the write: `resume` takes the value recorded first for the
//!   step (the journal keeps the first `FlagPrevious` of a step, and a re-run
//!   uses it instead of what its own `SET .. GET` returns), which was read
//!   before the write. The only way it can be stale is a concurrent writer in
//!   the few milliseconds between `GET` and `SET`, during a crash; runs that
//!   share flags should share a `lock:` anyway.
//!
//! Each operation opens its own connection, bounded by the provider's
//! `timeout` (connect and every reply; default 5 s). A fresh connection per
//! operation means a Redis that restarted between two steps just works, and
//! a reply lost to a dropped connection is never retried blindly (a retried
//! `SET .. GET` would return our own value as "previous"). When the write
//! went out and no answer came back (timeout, dropped connection), the error
//! says the write may have been applied, and what the key held before.
//!
//! A previous value is kept exactly as Redis held it ([`exact`]): a value
//! that is not canonical JSON (written by another tool: `on`, `1.50`,
//! non-UTF-8 bytes) travels through the journal as its bytes, so a restore,
//! in this process or after a crash, writes back exactly those bytes.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};
use serde_json::Value as Json;

use super::{exact, BoxFuture, FlagStore};

/// Connect and reply timeout when the provider sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest one flag write can take: connect, read the previous value,
/// write, each bounded by the timeout (what a plan counts for a flag step).
pub fn worst_case_set(timeout: Option<Duration>) -> Duration {
    timeout.unwrap_or(DEFAULT_TIMEOUT).saturating_mul(3)
}

pub struct RedisFlags {
    client: Client,
    /// `host:port/db`, without credentials, for messages.
    display: String,
    prefix: String,
    timeout: Duration,
}

impl RedisFlags {
    /// `url` is already rendered. Fails on a URL the client cannot use.
    pub fn new(url: &str, prefix: &str, timeout: Option<Duration>) -> Result<RedisFlags, String> {
        let client = Client::open(url)
            .map_err(|e| format!("`{}` is not a usable redis URL: {e}", redact(url)))?;
        let info = client.get_connection_info();
        let display = format!("{}/{}", info.addr, info.redis.db);
        Ok(RedisFlags {
            client,
            display,
            prefix: prefix.to_string(),
            timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.timeout, connecting).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(self.error("connect to", None, &e)),
            Err(_) => Err(format!(
                "cannot connect to redis at {}: no answer within {}",
                self.display,
                crate::duration::format(self.timeout)
            )),
        }
    }

    /// Runs one command with the reply timeout on top of the client's own.
    async fn query<T: redis::FromRedisValue>(
        &self,
        con: &mut MultiplexedConnection,
        cmd: &redis::Cmd,
        what: &str,
        key: &str,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(con)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(what, Some(key), &e)),
            Err(_) => Err(format!(
                "redis at {} did not answer within {} ({what} {key})",
                self.display,
                crate::duration::format(self.timeout)
            )),
        }
    }

    /// A message a person can act on, for the failures people actually hit.
    fn error(&self, what: &str, key: Option<&str>, e: &RedisError) -> String {
        let at = &self.display;
        let doing = match key {
            Some(key) => format!("{what} {key}"),
            None => "connecting".to_string(),
        };
        let code = e.code().unwrap_or_default();
        let text = e.to_string();
        if e.is_connection_refusal() {
            return format!(
                "cannot connect to redis at {at}: connection refused (is redis-server running there?)"
            );
        }
        let how = "the provider url carries them: redis://USER:PASSWORD@HOST:PORT/DB \
                   (or redis://:PASSWORD@...), e.g. with the password from a secret";
        if code == "NOAUTH" || text.contains("NOAUTH") {
            return format!("redis at {at} requires a password and none was given; {how}");
        }
        if e.kind() == redis::ErrorKind::AuthenticationFailed
            || code == "WRONGPASS"
            || text.contains("WRONGPASS")
        {
            return format!("redis at {at} rejected the credentials ({text}); {how}");
        }
        if code == "NOPERM" || text.contains("NOPERM") {
            return format!("redis at {at} does not allow this ({doing}): {text}");
        }
        if let Some(key) = key {
            if code == "WRONGTYPE" || text.contains("WRONGTYPE") {
                return format!(
                    "redis key {key} at {at} holds a value that is not a string (a list, hash, set ...); \
                     a flag must be a plain string key: pick another prefix or name, or remove the key"
                );
            }
            if what == "set" && text.contains("syntax error") {
                return format!(
                    "redis at {at} rejected `SET {key} ... GET` ({text}); flags need Redis 6.2 or newer"
                );
            }
        }
        if e.is_timeout() {
            return format!(
                "redis at {at} did not answer within {} ({doing})",
                crate::duration::format(self.timeout)
            );
        }
        if e.is_io_error() || e.is_connection_dropped() {
            return format!("lost the connection to redis at {at} ({doing}): {text}");
        }
        match key {
            Some(key) => format!("redis at {at}: cannot {what} {key}: {text}"),
            None => format!("cannot {what} redis at {at}: {text}"),
        }
    }

    /// A stored value as JSON; text that is not JSON stays a string.
    fn decode(&self, raw: Option<Vec<u8>>) -> Option<Json> {
        raw.map(|b| exact::from_bytes(&b))
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

impl FlagStore for RedisFlags {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Json>, String>> {
        Box::pin(async move {
            let key = self.key(name);
            let mut con = self.connect().await?;
            let raw: Option<Vec<u8>> = self
                .query(&mut con, redis::cmd("GET").arg(&key), "get", &key)
                .await?;
            Ok(self.decode(raw))
        })
    }

    fn set<'a>(
        &'a self,
        name: &'a str,
        value: &'a Json,
        record: &'a (dyn Fn(Option<&Json>) -> Result<(), String> + Send + Sync),
    ) -> BoxFuture<'a, Result<Option<Json>, String>> {
        Box::pin(async move {
            let key = self.key(name);
            let mut con = self.connect().await?;
            // Read first and record, so the journal holds the previous value
            // before the write can be observed (see the module docs).
            let before: Option<Vec<u8>> = self
                .query(&mut con, redis::cmd("GET").arg(&key), "get", &key)
                .await?;
            let before = self.decode(before);
            record(before.as_ref())?;
            let text = value.to_string();
            let set = redis::cmd("SET").arg(&key).arg(&text).arg("GET").clone();
            let previous: Option<Vec<u8>> = match tokio::time::timeout(
                self.timeout,
                set.query_async(&mut con),
            )
            .await
            {
                Ok(Ok(v)) => v,
                // Redis answered with an error: nothing was written.
                Ok(Err(e)) if !(e.is_timeout() || e.is_io_error() || e.is_connection_dropped()) => {
                    return Err(self.error("set", Some(&key), &e));
                }
                // The command went out and no answer came back: it may
                // have been applied. Say so, with what to put back.
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => self.error("set", Some(&key), &e),
                        _ => format!(
                            "redis at {} did not answer within {} (set {key})",
                            self.display,
                            crate::duration::format(self.timeout)
                        ),
                    };
                    let was = exact::shown(before.as_ref());
                    return Err(format!(
                            "{why}; the write may or may not have been applied: check {key} (it was {was})"
                        ));
                }
            };
            let previous = self.decode(previous);
            if previous != before {
                // Someone else wrote the key between our read and our write:
                // what the atomic write returned is what we replaced.
                // The write happened: what matters now is saying so.
                record(previous.as_ref())?;
            }
            Ok(previous)
        })
    }

    fn restore<'a>(
        &'a self,
        name: &'a str,
        previous: Option<&'a Json>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let key = self.key(name);
            let mut con = self.connect().await?;
            match previous {
                Some(v) => {
                    let text = exact::to_bytes(v);
                    let () = self
                        .query(
                            &mut con,
                            redis::cmd("SET").arg(&key).arg(&text),
                            "restore",
                            &key,
                        )
                        .await?;
                }
                None => {
                    let _: i64 = self
                        .query(&mut con, redis::cmd("DEL").arg(&key), "delete", &key)
                        .await?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            redact("redis://:s3cret@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://bob:s3cret@h:1/2"), "redis://bob:***@h:1/2");
        assert_eq!(redact("redis://h:1/2"), "redis://h:1/2");
    }

    #[test]
    fn display_has_no_credentials() {
        let s = RedisFlags::new("redis://:pw@127.0.0.1:7/3", "f:", None).unwrap();
        assert_eq!(s.display, "127.0.0.1:7/3");
        assert_eq!(s.key("x"), "f:x");
    }

    #[test]
    fn stored_bytes_decode_exactly() {
        let s = RedisFlags::new("redis://127.0.0.1:7/0", "", None).unwrap();
        let v = s.decode(Some(b"on".to_vec())).unwrap();
        assert_eq!(exact::to_bytes(&v), b"on");
        assert_eq!(
            s.decode(Some(b"{\"a\":1}".to_vec())),
            Some(serde_json::json!({"a": 1}))
        );
    }
}
