//! What a running sidecar has loaded, read from its admin port: the policy documents (file by
//! file, in order), its mesh config and the rest of `/config_dump`. `authz check --admin`
//! evaluates against exactly these; `migrate plan` also rebuilds them under a proposed mesh
//! config.

use trustmesh_policy::{load, MeshConfig, PolicySet};

pub struct Loaded {
    pub addr: String,
    pub dump: serde_json::Value,
    pub mesh: MeshConfig,
    sources: Vec<load::SourceText>,
}

impl Loaded {
    pub fn fetch(addr: &str) -> Result<Loaded, String> {
        let dump = super::admin_client::get_json(addr, "/config_dump")?;
        let mesh_yaml = serde_json::to_string(&dump["mesh"]).map_err(|e| e.to_string())?;
        let mesh = MeshConfig::from_yaml_str(&mesh_yaml)
            .map_err(|e| format!("{addr}: mesh config in /config_dump: {e}"))?;
        // One source per file, documents in their original order, so names and locations in
        // an explanation match the files on the sidecar's disk.
        let mut sources: Vec<load::SourceText> = Vec::new();
        for d in dump["policies"]["documents"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let file = d["file"].as_str().unwrap_or("(sidecar)").to_string();
            let doc = match d["unreadable"].as_str() {
                // The sidecar could not read the rest of this file; neither can we, so the set
                // denies everything just as the sidecar's does.
                Some(why) => format!("[the sidecar could not read this document: {why}\n"),
                None => serde_yaml::to_string(&d["document"]).map_err(|e| e.to_string())?,
            };
            match sources.iter_mut().find(|s| s.file == file) {
                Some(s) => {
                    s.text.push_str("---\n");
                    s.text.push_str(&doc);
                }
                None => sources.push(load::SourceText { file, text: doc }),
            }
        }
        Ok(Loaded {
            addr: addr.to_string(),
            dump,
            mesh,
            sources,
        })
    }

    /// The sidecar's policies built under `mesh` (its own, or a proposed one).
    pub fn policies(&self, mesh: &MeshConfig) -> Result<PolicySet, String> {
        PolicySet::from_sources(&self.sources, mesh)
            .map(|(set, _notices)| set)
            .map_err(|e| format!("{}: policies in /config_dump: {e}", self.addr))
    }

    /// The workload's namespace and labels, as a request's destination.
    pub fn workload(&self) -> (String, std::collections::BTreeMap<String, String>) {
        let w = &self.dump["policies"]["workload"];
        let ns = w["namespace"].as_str().unwrap_or_default().to_string();
        let labels = serde_json::from_value(w["labels"].clone()).unwrap_or_default();
        (ns, labels)
    }
}
