//! The hash map for tables a request looks up on its way: the pools by address, the metric
//! series by label set, the recent peers.
//!
//! Why not std's default: SipHash costs a few hundred instructions per lookup, and the request
//! path made about ten (about 3 % of the server side's instructions per request). foldhash is
//! seeded at random per process and per map, which is what std's hasher buys against keys
//! chosen to collide; these tables are also bounded in size by their owners. Maps keyed by
//! what a client sends (headers, tokens) keep std's hasher.

/// A `HashMap` with foldhash's randomly seeded fast hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// An empty [`FastMap`].
pub fn new<K, V>() -> FastMap<K, V> {
    FastMap::default()
}
