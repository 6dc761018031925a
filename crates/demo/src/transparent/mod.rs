//! `trustmesh quickstart --transparent`: the same workloads, identities and policies as the
//! loopback quickstart, but every workload lives in a network namespace of its own, like a
//! pod, behind `trustmesh capture` and a transparent sidecar. The apps are unmodified: they
//! call `http://reviews.bookinfo:9080/` by name, and the sidecars resolve the name, pick the
//! endpoint and the mTLS identity from the registry (Istio WorkloadEntry / ServiceEntry /
//! DestinationRule YAML), and enforce the same PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication and CUSTOM policies — all served by the same `trustmesh control` per
//! trust domain as in the loopback quickstart, here running in the hub namespace.
//!
//! It needs root (namespaces, iptables), so it is a flag and not the default: the loopback
//! quickstart stays runnable by anyone. [`preflight`] says, before anything is started, why it
//! cannot run here.
//!
//! Layout: [`topology`] makes the namespaces, [`registry`] writes the registry YAML, [`mesh`]
//! starts apps, the control planes (in the hub namespace), agents, captures and sidecars, [`apps`] runs the calling apps (curl, getent, Python),
//! [`tour`] runs the steps.

pub mod apps;
pub mod mesh;
pub mod registry;
pub mod topology;
pub mod tour;

use crate::transparent::mesh::{Mesh, ADMIN};
use crate::transparent::registry::service_authority;
use crate::workloads::{ALL, ANALYTICS, FRONTEND, PAYROLL, RATINGS, REVIEWS};

/// Programs the transparent quickstart runs, and what for.
const TOOLS: [(&str, &str); 7] = [
    ("ip", "network namespaces (iproute2)"),
    ("iptables", "the capture rules"),
    ("iptables-restore", "the capture rules"),
    (
        "setpriv",
        "running the apps as an unprivileged user (util-linux)",
    ),
    ("curl", "the calling app"),
    ("getent", "the name lookup step (libc)"),
    ("python3", "the app that keeps a connection open"),
];

/// Why the transparent quickstart cannot run on this machine, if it cannot: it must be root
/// and find its tools (on PATH, or in the sbin directories).
pub fn preflight() -> Result<(), String> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    check(euid, |tool| {
        let p = std::path::Path::new(tool);
        if p.is_absolute() {
            p.is_file()
        } else {
            crate::netns::find_program(tool).is_some()
        }
    })
}

/// [`preflight`] with the user and the tool lookup given.
fn check(euid: u32, found: impl Fn(&str) -> bool) -> Result<(), String> {
    if euid != 0 {
        return Err(
            "quickstart --transparent needs root: it creates network namespaces and \
                    installs iptables rules inside them. Run it as root (sudo), or run \
                    `trustmesh quickstart` without --transparent, which needs no privileges."
                .into(),
        );
    }
    let missing: Vec<String> = TOOLS
        .iter()
        .map(|(tool, why)| {
            (
                if *tool == "python3" {
                    apps::python()
                } else {
                    tool
                },
                why,
            )
        })
        .filter(|(tool, _)| !found(tool))
        .map(|(tool, why)| format!("{tool} ({why})"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "quickstart --transparent needs programs found neither on PATH nor in /usr/sbin or \
             /sbin: {}",
            missing.join(", ")
        ));
    }
    Ok(())
}

/// What to type to use the mesh the tour leaves running.
pub fn print_how_to_use(mesh: &Mesh) {
    let pid = std::process::id();
    println!("\nTry it yourself: `app <workload> <command>` runs a command as the app in that");
    println!("workload's namespace (uid 65534, so the capture takes its traffic):");
    println!(
        "  app() {{ ns=$1; shift; ip netns exec tmq-$ns-{pid} setpriv --reuid 65534 --regid 65534 --clear-groups \"$@\"; }}"
    );
    let examples = [
        (
            FRONTEND.name,
            format!("curl -s http://{}/reviews/1", service_authority(&REVIEWS)),
            "frontend -> reviews over mTLS",
        ),
        (
            FRONTEND.name,
            format!("curl -s http://{}/admin", service_authority(&RATINGS)),
            "403 by AuthorizationPolicy",
        ),
        (
            FRONTEND.name,
            format!(
                "curl -s -H 'x-demo-approval: granted' http://{}/salaries/bob",
                service_authority(&PAYROLL)
            ),
            "ext_authz",
        ),
        (
            ANALYTICS.name,
            format!("curl -s http://{}/reviews/1", service_authority(&REVIEWS)),
            "team-b -> team-a, federated",
        ),
        (
            FRONTEND.name,
            format!("getent hosts {}.{}", REVIEWS.name, REVIEWS.namespace),
            "the sidecar's DNS proxy answers",
        ),
    ];
    for (ns, cmd, what) in examples {
        println!("  app {ns:<9} {cmd:<78} # {what}");
    }
    println!("Operator's view (the control planes in the hub namespace, then each sidecar's admin");
    println!("endpoint, on its namespace's loopback):");
    println!("  {}", mesh.control.proxy_status_command());
    println!(
        "  policies and registry: edit the Istio YAML in {} (both control planes watch it)",
        mesh.control.config_dir.display()
    );
    let exe = mesh.exe.display();
    for w in ALL {
        let ns = &mesh.topology.node(w).ns;
        println!(
            "  {:<9} ip netns exec {} {exe} tls-check --admin {ADMIN}",
            w.name,
            ns.name()
        );
    }
    println!(
        "  capture   ip netns exec {} {exe} capture show --ipv4-only",
        mesh.topology.node(&FRONTEND).ns.name()
    );
    println!(
        "Files (configs, certificates, policies, registry, logs): {}",
        mesh.dir.display()
    );
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn refuses_without_root_before_looking_for_tools() {
        let e = check(1000, |_| panic!("no tool is looked for")).unwrap_err();
        assert!(e.starts_with("quickstart --transparent needs root"), "{e}");
    }

    #[test]
    fn names_each_missing_tool_and_what_it_is_for() {
        let e = check(0, |t| !t.starts_with("iptables")).unwrap_err();
        assert!(
            e.ends_with("iptables (the capture rules), iptables-restore (the capture rules)"),
            "{e}"
        );
        assert_eq!(check(0, |_| true), Ok(()));
    }
}
