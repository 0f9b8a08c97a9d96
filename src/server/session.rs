//! Sessions that only escalate: within `server.session_ttl_secs` of its last request, a
//! session's tier is the highest it has used, so a conversation does not bounce between models
//! turn by turn (which would break prompt caches, tool-call ids and the voice mid-task).
//!
//! The map is bounded: beyond `server.session_capacity` the least recently used session is
//! forgotten (counted as an eviction). Expired sessions are dropped when met.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// The request header that names a session.
pub const SESSION_HEADER: &str = "x-session-id";

/// Longest session key kept; longer ones are refused as a bad request by the caller.
pub const MAX_KEY_LEN: usize = 256;

pub(crate) struct Sessions {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Keys in the order they were touched, with the stamp of that touch; an entry whose stamp
    /// has moved on is stale and skipped.
    order: VecDeque<(String, u64)>,
    next: u64,
    evictions: u64,
}

struct Entry {
    tier: usize,
    seen: Instant,
    stamp: u64,
}

/// What a session did to one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sticky {
    /// The tier to use: max(routed, the session's highest so far).
    pub tier: usize,
    /// The session's highest tier before this request (`None`: new or expired).
    pub before: Option<usize>,
}

impl Sessions {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Sessions {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Applies the session to a routed tier and records the result.
    pub fn escalate(&self, key: &str, routed: usize, now: Instant) -> Sticky {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let before = inner
            .map
            .get(key)
            .filter(|e| now.duration_since(e.seen) <= self.ttl)
            .map(|e| e.tier);
        let tier = before.map_or(routed, |b| b.max(routed));
        let stamp = inner.next;
        inner.next += 1;
        inner.map.insert(
            key.to_string(),
            Entry {
                tier,
                seen: now,
                stamp,
            },
        );
        inner.order.push_back((key.to_string(), stamp));
        while inner.map.len() > self.capacity {
            let Some((old, s)) = inner.order.pop_front() else {
                break;
            };
            if inner.map.get(&old).is_some_and(|e| e.stamp == s) {
                let expired = inner
                    .map
                    .get(&old)
                    .is_some_and(|e| now.duration_since(e.seen) > self.ttl);
                inner.map.remove(&old);
                if !expired {
                    inner.evictions += 1;
                }
            }
        }
        // Stale order entries (keys touched again since) are skipped above; keep their number
        // bounded when the map is not full.
        if inner.order.len() > 2 * self.capacity + 1024 {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|(k, s)| map.get(k).is_some_and(|e| e.stamp == *s));
        }
        Sticky { tier, before }
    }

    /// Sessions held now (expired ones included until they are met).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    /// Sessions forgotten to make room, since start.
    pub fn evictions(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .evictions
    }
}

/// The session key of a request: the `x-session-id` header, else (with `from_body`) the body's
/// user field that `body_user` extracts. `Err` for a key that is not text or is too long.
pub(crate) fn session_key(
    headers: &HeaderMap,
    body_user: Option<String>,
    from_body: bool,
) -> Result<Option<String>, String> {
    let key = match headers.get(SESSION_HEADER) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| format!("{SESSION_HEADER} must be visible ASCII"))?
                .trim()
                .to_string(),
        ),
        None if from_body => body_user,
        None => None,
    };
    match key {
        Some(k) if k.len() > MAX_KEY_LEN => Err(format!(
            "the session key is {} bytes; at most {MAX_KEY_LEN} are accepted",
            k.len()
        )),
        Some(k) if k.is_empty() => Ok(None),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalates_never_steps_down_and_expires() {
        let s = Sessions::new(Duration::from_secs(10), 10);
        let t0 = Instant::now();
        assert_eq!(
            s.escalate("a", 2, t0),
            Sticky {
                tier: 2,
                before: None
            }
        );
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            s.escalate("a", 0, t1),
            Sticky {
                tier: 2,
                before: Some(2)
            }
        );
        // Ten seconds after the *last* request it still holds; past that it starts over.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(s.escalate("a", 1, t2).tier, 2);
        let t3 = t2 + Duration::from_secs(11);
        assert_eq!(
            s.escalate("a", 0, t3),
            Sticky {
                tier: 0,
                before: None
            }
        );
        // Other sessions are their own.
        assert_eq!(s.escalate("b", 1, t3).tier, 1);
    }

    #[test]
    fn the_least_recently_used_goes_first_and_is_counted() {
        let s = Sessions::new(Duration::from_secs(100), 2);
        let t = Instant::now();
        s.escalate("a", 2, t);
        s.escalate("b", 2, t);
        s.escalate("a", 0, t); // a is now the most recent
        s.escalate("c", 0, t); // evicts b
        assert_eq!((s.len(), s.evictions()), (2, 1));
        assert_eq!(s.escalate("a", 0, t).tier, 2, "a was kept");
        assert_eq!(s.escalate("b", 0, t).before, None, "b was forgotten");
        // Many touches of one key do not grow the bookkeeping without bound.
        for _ in 0..10_000 {
            s.escalate("a", 0, t);
        }
        assert!(s.inner.lock().unwrap().order.len() <= 2 * 2 + 1024 + 1);
    }

    #[test]
    fn keys_come_from_the_header_then_the_body() {
        let mut h = HeaderMap::new();
        assert_eq!(session_key(&h, Some("u1".into()), false), Ok(None));
        assert_eq!(
            session_key(&h, Some("u1".into()), true),
            Ok(Some("u1".into()))
        );
        h.insert(SESSION_HEADER, "s-9".parse().unwrap());
        assert_eq!(
            session_key(&h, Some("u1".into()), true),
            Ok(Some("s-9".into()))
        );
        h.insert(SESSION_HEADER, "x".repeat(300).parse().unwrap());
        assert!(session_key(&h, None, false).is_err());
    }
}
