//! The DNS side of the registry: which service a name a client asks for means, with the
//! short names a Kubernetes client is used to.
//!
//! Istio's DNS proxy (`pkg/dns/client/dns.go`, `generateAltHosts`; the name table in
//! `pkg/dns/server/name_table.go`) answers, for a Kubernetes service `name.ns.svc.<domain>`,
//! also `name.ns`, `name.ns.svc`, and `name` — the last only to clients in `ns`; other hosts
//! (ServiceEntry hosts) only by their full name; a name not found exactly is tried against
//! `*.` wildcards from the most specific (`lookupHost`); names are compared in lower case; a
//! host with no address to give is not in the table at all, so the query goes upstream.
//! trustmesh has no Kubernetes Services: a ServiceEntry host of the form
//! `name.ns.svc.<domain>` stands for one and gets its short names.

use std::collections::HashMap;

use crate::host;

#[derive(Debug, Default)]
pub struct NameIndex {
    /// Full names and `*.suffix` patterns.
    hosts: HashMap<String, Vec<u32>>,
    /// `name.ns` and `name.ns.svc`.
    alt: HashMap<String, Vec<u32>>,
    /// Namespace → `name`, for clients of that namespace.
    short: HashMap<String, HashMap<String, Vec<u32>>>,
}

impl NameIndex {
    /// Adds a service's host (normalized); only hosts with addresses to answer belong here.
    pub fn add(&mut self, name: &str, service: u32, domain: &str) {
        self.hosts
            .entry(name.to_string())
            .or_default()
            .push(service);
        if let Some((short, ns)) = host::kube_parts(name, domain) {
            for alt in [format!("{short}.{ns}"), format!("{short}.{ns}.svc")] {
                self.alt.entry(alt).or_default().push(service);
            }
            self.short
                .entry(ns.to_string())
                .or_default()
                .entry(short.to_string())
                .or_default()
                .push(service);
        }
    }

    /// The services a query for `name` (any case, trailing dot or not) from a client in
    /// `client_namespace` means.
    pub fn lookup(&self, name: &str, client_namespace: &str) -> Option<&[u32]> {
        let name = host::normalize(name);
        if let Some(s) = self.hosts.get(&name).or_else(|| self.alt.get(&name)) {
            return Some(s);
        }
        if let Some(s) = self.short.get(client_namespace).and_then(|m| m.get(&name)) {
            return Some(s);
        }
        let found = host::wildcard_keys(&name).find_map(|k| self.hosts.get(&k));
        found.map(Vec::as_slice)
    }
}
