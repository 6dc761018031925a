//! What one stream's client holds of one resource type, and what it should be sent next: the
//! incremental protocol's bookkeeping, without I/O so every rule is a unit test.
//!
//! The server answers one response per type at a time and waits for its ACK or NACK before the
//! next, so "what the client holds" is always known: an ACK moves the pending changes into
//! `held`; a NACK leaves `held` as it was (the client keeps its previous configuration) and
//! remembers the refused versions, so the same bad resource is not sent again and again — only
//! a new version of it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Weak};

/// A resource as the server has it now.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub version: String,
    pub body: prost_types::Any,
}

/// What the client should have: resource name → resource.
pub type ResourceMap = BTreeMap<String, Arc<Versioned>>;

/// The changes of one response.
#[derive(Debug, Default, PartialEq)]
pub struct Delta {
    pub updated: Vec<(String, Arc<Versioned>)>,
    pub removed: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ack,
    Nack(String),
    /// A nonce that is not the one outstanding (an old response's): nothing to record.
    Stale,
}

/// name → the version sent, or `None` for a removal.
type Changes = Vec<(String, Option<String>)>;

#[derive(Debug, Default)]
pub struct TypeState {
    /// Subscribed to every resource of the type (a first request naming none, or `*`).
    wildcard: bool,
    names: BTreeSet<String>,
    /// name → version the client has acknowledged (or declared on reconnect).
    held: HashMap<String, String>,
    /// name → version the client refused; not resent until the version changes.
    refused: HashMap<String, String>,
    /// The unanswered response: its nonce and its changes.
    pending: Option<(String, Changes)>,
    /// A (re)subscription the client waits to hear about, even when nothing is to be sent.
    must_answer: bool,
    /// A view the client is known to be in step with: a diff against it found nothing to
    /// send, or the response computed from it was ACKed. Until the subscription changes or a
    /// NACK comes, a diff against that very map would find nothing again, so it is skipped:
    /// after each ACK the server looks for changes made meanwhile, and with 10,000 sidecars that
    /// second diff was 16 % of a push's CPU (perf, `bench/control.sh`). A `Weak` so the
    /// identity cannot be reused by another map while it is remembered.
    in_step: Option<Weak<ResourceMap>>,
    /// The view the unanswered response was computed from.
    pending_view: Option<Weak<ResourceMap>>,
}

impl TypeState {
    /// Applies a request's subscription fields. `first` is the stream's first request of this
    /// type, whose empty subscription means "everything" (the legacy wildcard).
    pub fn subscribe(
        &mut self,
        first: bool,
        subscribe: &[String],
        unsubscribe: &[String],
        initial: &HashMap<String, String>,
    ) {
        if first || !subscribe.is_empty() || !unsubscribe.is_empty() {
            self.in_step = None;
        }
        if first {
            self.wildcard = subscribe.is_empty();
            self.held = initial.clone();
            self.must_answer = true;
        }
        for n in subscribe {
            if n == "*" {
                self.wildcard = true;
            } else {
                self.names.insert(n.clone());
            }
            self.must_answer = true;
        }
        for n in unsubscribe {
            if n == "*" {
                self.wildcard = false;
            } else {
                self.names.remove(n);
            }
            // The client drops what it unsubscribed from; nothing is sent for it.
            if !self.subscribed(n) {
                self.held.remove(n);
                self.refused.remove(n);
            }
        }
    }

    fn subscribed(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Records an ACK or NACK of the response with `nonce`.
    pub fn reply(&mut self, nonce: &str, error: Option<String>) -> Reply {
        match &self.pending {
            Some((n, _)) if n == nonce => {}
            _ => return Reply::Stale,
        }
        let (_, changes) = self.pending.take().expect("checked above");
        let view = self.pending_view.take();
        match error {
            None => {
                self.in_step = view;
                for (name, version) in changes {
                    self.refused.remove(&name);
                    match version {
                        Some(v) => self.held.insert(name, v),
                        None => self.held.remove(&name),
                    };
                }
                Reply::Ack
            }
            Some(why) => {
                self.in_step = None;
                for (name, version) in changes {
                    if let Some(v) = version {
                        self.refused.insert(name, v);
                    }
                }
                Reply::Nack(why)
            }
        }
    }

    /// Whether the client is known to hold everything of `want` already (see `in_step`).
    pub fn in_step_with(&self, want: &Arc<ResourceMap>) -> bool {
        self.in_step
            .as_ref()
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(want)))
    }

    /// Records what a diff or a response was computed from: `want` is in step now when
    /// nothing was to be sent, and once ACKed when `sent` is true.
    pub fn computed_from(&mut self, want: &Arc<ResourceMap>, sent: bool) {
        if sent {
            self.pending_view = Some(Arc::downgrade(want));
        } else {
            self.in_step = Some(Arc::downgrade(want));
        }
    }

    /// Whether a response is waiting for its ACK or NACK.
    pub fn waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// What to send to bring the client from what it holds to `want`; `None` when there is
    /// nothing to say or a response is still unanswered.
    pub fn next(&mut self, want: &ResourceMap) -> Option<Delta> {
        if self.pending.is_some() {
            return None;
        }
        // Refusals of versions no longer wanted are over; when the last one ends, the client is
        // told (an empty response it ACKs), so its NACK does not outlive the problem.
        let before = self.refused.len();
        self.refused
            .retain(|n, v| want.get(n).is_some_and(|r| &r.version == v));
        if before > 0 && self.refused.is_empty() {
            self.must_answer = true;
        }
        let mut delta = Delta::default();
        for (name, r) in want {
            if !self.subscribed(name) {
                continue;
            }
            let held = self.held.get(name) == Some(&r.version);
            let refused = self.refused.get(name) == Some(&r.version);
            if !held && !refused {
                delta.updated.push((name.clone(), r.clone()));
            }
        }
        let mut removed: BTreeSet<&String> = self
            .held
            .keys()
            .filter(|n| !want.contains_key(*n) || !self.subscribed(n))
            .collect();
        if self.must_answer {
            // Named subscriptions to something that does not exist are answered as removed,
            // so a client waiting for them learns they are absent.
            removed.extend(self.names.iter().filter(|n| !want.contains_key(*n)));
        }
        delta.removed = removed.into_iter().cloned().collect();
        if delta.updated.is_empty() && delta.removed.is_empty() && !self.must_answer {
            return None;
        }
        self.must_answer = false;
        Some(delta)
    }

    /// Records that `delta` went out with `nonce`.
    pub fn sent(&mut self, nonce: String, delta: &Delta) {
        let mut changes: Changes = delta
            .updated
            .iter()
            .map(|(n, r)| (n.clone(), Some(r.version.clone())))
            .collect();
        changes.extend(delta.removed.iter().map(|n| (n.clone(), None)));
        self.pending = Some((nonce, changes));
    }
}

#[cfg(test)]
mod tests;
