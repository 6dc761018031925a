//! The peers this sidecar has recently served: who (the SPIFFE ID a peer proved, or a plaintext
//! peer), on which workload port, how often, and a few of their requests. `trustmesh migrate
//! plan` replays them against a proposed mesh config (a trust-domain change, an alias removed)
//! to list what would be refused before anything changes; `/peers` on the admin port serves it.
//!
//! Bounded: at most [`MAX_PEERS`] (peer, port) entries, each keeping [`MAX_SAMPLES`] distinct
//! requests; when full, the entry seen longest ago makes room. A client cannot grow it by
//! inventing paths or identities, only displace older entries. Cost per request: one lock and
//! two map lookups by `&str`, no allocation; a request is compared with the samples at most
//! once a second per entry, and only a new sample or a new entry allocates.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::fastmap::FastMap;

/// (peer, port) entries kept.
pub const MAX_PEERS: usize = 512;
/// Distinct requests kept per entry.
pub const MAX_SAMPLES: usize = 8;
/// Bytes of a sampled path or host kept.
const MAX_FIELD: usize = 256;

/// One HTTP request as policy saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    pub method: String,
    pub path: String,
    pub host: String,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    /// The peer's SPIFFE ID; absent for a plaintext peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The workload port it reached (the port policy sees).
    pub port: u16,
    pub requests: u64,
    /// Unix seconds.
    pub first_seen: i64,
    pub last_seen: i64,
    /// TCP connections carry no request: empty then.
    pub samples: VecDeque<Sample>,
    #[serde(skip)]
    last_sampled: i64,
}

#[derive(Default)]
pub struct RecentPeers {
    /// principal ("" for plaintext) → port → what was seen.
    inner: Mutex<FastMap<String, FastMap<u16, Seen>>>,
}

impl RecentPeers {
    /// Records one inbound request (`http`: method, path, host) or connection (`None`).
    pub fn record(
        &self,
        principal: Option<&str>,
        port: u16,
        http: Option<(&str, &str, &str)>,
        now: i64,
    ) {
        let key = principal.unwrap_or("");
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // A known (peer, port), the common case, is one lookup.
        if let Some(seen) = map.get_mut(key).and_then(|p| p.get_mut(&port)) {
            return seen.count(http, now);
        }
        // Only a new (peer, port) allocates.
        if map.values().map(FastMap::len).sum::<usize>() >= MAX_PEERS {
            evict_oldest(&mut map);
        }
        let mut seen = Seen {
            principal: principal.map(str::to_string),
            port,
            requests: 0,
            first_seen: now,
            last_seen: now,
            samples: VecDeque::new(),
            last_sampled: i64::MIN,
        };
        seen.count(http, now);
        map.entry(key.to_string()).or_default().insert(port, seen);
    }

    /// Every entry, most recently seen first.
    pub fn list(&self) -> Vec<Seen> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Seen> = map.values().flat_map(|p| p.values().cloned()).collect();
        all.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.port.cmp(&b.port)));
        all
    }
}

impl Seen {
    /// One more request (`http`: method, path, host) or connection (`None`) at `now`.
    fn count(&mut self, http: Option<(&str, &str, &str)>, now: i64) {
        self.requests += 1;
        self.last_seen = now;
        // A sample at most once a second per entry: the common request costs no comparison.
        let Some((method, path, host)) = http else {
            return;
        };
        if self.last_sampled == now {
            return;
        }
        self.last_sampled = now;
        let (path, host) = (cut(path), cut(host));
        let same = |s: &Sample| s.method == method && s.path == path && s.host == host;
        if let Some(i) = self.samples.iter().position(same) {
            // Most recent last.
            let s = self.samples.remove(i).expect("position is in range");
            self.samples.push_back(s);
            return;
        }
        if self.samples.len() >= MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            method: cut(method).to_string(),
            path: path.to_string(),
            host: host.to_string(),
        });
    }
}

/// At most [`MAX_FIELD`] bytes of `s`, cut at a character boundary.
fn cut(s: &str) -> &str {
    if s.len() <= MAX_FIELD {
        return s;
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn evict_oldest(map: &mut FastMap<String, FastMap<u16, Seen>>) {
    let oldest = map
        .iter()
        .flat_map(|(k, ports)| {
            ports
                .values()
                .map(move |s| (s.last_seen, k.clone(), s.port))
        })
        .min();
    if let Some((_, key, port)) = oldest {
        if let Some(ports) = map.get_mut(&key) {
            ports.remove(&port);
            if ports.is_empty() {
                map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_samples_and_stays_bounded() {
        let p = RecentPeers::default();
        let id = "spiffe://old.example/ns/a/sa/client";
        for i in 0..20 {
            p.record(
                Some(id),
                8080,
                Some(("GET", &format!("/p/{i}"), "svc")),
                100 + i,
            );
        }
        p.record(None, 8080, None, 200);
        let all = p.list();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].principal, None, "the most recent first");
        let c = &all[1];
        assert_eq!((c.requests, c.first_seen, c.last_seen), (20, 100, 119));
        assert_eq!(c.samples.len(), MAX_SAMPLES);
        assert_eq!(c.samples.back().unwrap().path, "/p/19");

        // Many identities: the oldest entries make room, the count never passes the bound.
        for i in 0..(MAX_PEERS as i64 + 50) {
            p.record(
                Some(&format!("spiffe://x/ns/n/sa/s{i}")),
                80,
                None,
                1_000 + i,
            );
        }
        let all = p.list();
        assert_eq!(all.len(), MAX_PEERS);
        assert!(all.iter().all(|s| s.principal.as_deref() != Some(id)));

        // Within one second only the first request is sampled; long fields are cut.
        let p = RecentPeers::default();
        let long = format!("/{}", "é".repeat(300));
        p.record(Some(id), 80, Some(("GET", &long, "h")), 5);
        p.record(Some(id), 80, Some(("GET", "/other", "h")), 5);
        let all = p.list();
        assert_eq!((all[0].requests, all[0].samples.len()), (2, 1));
        let kept = &all[0].samples[0].path;
        assert!(
            kept.len() <= MAX_FIELD && long.starts_with(kept.as_str()),
            "{kept}"
        );
    }
}
