//! Connecting to the API server: a kubeconfig file when one is named, else the pod's
//! in-cluster service account (or `$KUBECONFIG` / `~/.kube/config`, as kubectl finds them).

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// A client for the cluster; the error says which way of finding it failed and why.
pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "no cluster found (not in a pod, no $KUBECONFIG or ~/.kube/config): {e}"
            )
        })?,
    };
    Client::try_from(config).map_err(|e| anyhow::anyhow!("kubernetes client: {e}"))
}
