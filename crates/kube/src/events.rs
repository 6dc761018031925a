//! Problems with cluster objects as Kubernetes Events on the object, where `kubectl describe`
//! and `kubectl get events` show them: an operator who applied a broken AuthorizationPolicy
//! sees why next to it, not only in the control plane's log and `/debug/syncz`.
//!
//! Each problem is reported once while it lasts (a `Warning` Event, reason `Invalid`); one that
//! goes away and comes back is reported again.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, PostParams};
use kube::Client;

use crate::store::Shared;

/// Who reports, in the Event.
const COMPONENT: &str = "trustmesh-control";

/// The object a problem names, when it is a cluster object: `(kind, namespace, name)`, from
/// the origin the source gives its documents (`kubernetes <Kind> <ns>/<name>`).
pub fn object_of(problem: &str) -> Option<(&str, &str, &str)> {
    let rest = problem.strip_prefix("kubernetes ")?;
    let (kind, rest) = rest.split_once(' ')?;
    let end = rest.find([':', ' ', '#']).unwrap_or(rest.len());
    let (ns, name) = rest[..end].split_once('/')?;
    (!kind.is_empty() && !ns.is_empty() && !name.is_empty()).then_some((kind, ns, name))
}

pub struct Reporter {
    client: Client,
    store: Shared,
    reported: BTreeSet<String>,
}

impl Reporter {
    pub fn new(client: Client, store: Shared) -> Reporter {
        Reporter {
            client,
            store,
            reported: BTreeSet::new(),
        }
    }

    /// Reports each of `problems` that names a cluster object and was not reported yet.
    pub async fn report(&mut self, problems: &[String]) {
        let now: BTreeSet<String> = problems
            .iter()
            .filter(|p| object_of(p).is_some())
            .cloned()
            .collect();
        self.reported.retain(|p| now.contains(p));
        for p in now {
            if self.reported.contains(&p) {
                continue;
            }
            let Some(event) = self.event_for(&p) else {
                continue;
            };
            let ns = event.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
            match api.create(&PostParams::default(), &event).await {
                Ok(_) => {
                    self.reported.insert(p);
                }
                Err(e) => tracing::warn!("kubernetes: cannot record an Event in {ns}: {e}"),
            }
        }
    }

    fn event_for(&self, problem: &str) -> Option<Event> {
        let (kind, ns, name) = object_of(problem)?;
        let (api_version, uid) = {
            let s = self.store.lock().expect("kube store poisoned");
            let key = format!("{ns}/{name}");
            match kind {
                "Service" => ("v1".to_string(), s.services.get(&key)?.metadata.uid.clone()),
                "Pod" => ("v1".to_string(), s.pods.get(&key)?.metadata.uid.clone()),
                _ => {
                    let o = s.istio.get(kind)?.get(&key)?;
                    let api = o.get("apiVersion")?.as_str()?.to_string();
                    let uid = o["metadata"]["uid"].as_str().map(str::to_string);
                    (api, uid)
                }
            }
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        Some(Event {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{name}.")),
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some(api_version),
                kind: Some(kind.to_string()),
                name: Some(name.to_string()),
                namespace: Some(ns.to_string()),
                uid,
                ..Default::default()
            },
            reason: Some("Invalid".into()),
            message: Some(problem.to_string()),
            type_: Some("Warning".into()),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(COMPONENT.into()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now.clone()),
            event_time: Some(MicroTime(now.0)),
            action: Some("Validate".into()),
            count: Some(1),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::object_of;

    #[test]
    fn problems_name_their_object() {
        let p = "kubernetes AuthorizationPolicy foo/broken:1:spec.action: unknown variant";
        assert_eq!(object_of(p), Some(("AuthorizationPolicy", "foo", "broken")));
        assert_eq!(
            object_of("kubernetes Service shop/web: duplicate"),
            Some(("Service", "shop", "web"))
        );
        assert_eq!(object_of("config/a.yaml:1: bad"), None);
        assert_eq!(object_of("cannot watch Pod: forbidden"), None);
        assert_eq!(object_of("kubernetes ConfigMap istio"), None);
    }
}
