//! The transparent tour: the loopback tour's scenarios, made by unmodified apps that call
//! services by name from inside their namespaces — curl as uid 65534, captured by iptables,
//! resolved by the sidecar's DNS proxy, routed and secured by the sidecar from the registry —
//! plus the one thing only this mode has to show: the name resolving to a service VIP. The
//! control-plane steps (a policy edit, the `proxy-status` view) are the loopback tour's
//! ([`crate::control_tour`]), with the call made by frontend's app.
//!
//! Each step prints the command it ran, written `[ns] command` for
//! `ip netns exec tmq-<ns>-<pid> setpriv --reuid 65534 --regid 65534 --clear-groups command`.

use std::time::{Duration, Instant};

use crate::client::Outcome;
use crate::control_tour;
use crate::report::{
    abbrev, describe_sync, expect_status, peer_of, served_serial, short_status, Report,
};
use crate::transparent::apps::{self, KeptConnection};
use crate::transparent::mesh::Mesh;
use crate::transparent::registry::{app_port, service_authority};
use crate::transparent::topology::{Node, VIPS};
use crate::workloads::{
    Workload, ANALYTICS, FRONTEND, PAYROLL, RATINGS, REVIEWS, REVIEWS_TTL_SECS, TD_A, TD_B,
};

/// A call made by an app: where from, what it ran, what came back.
struct Call {
    ran: String,
    outcome: Outcome,
}

/// `curl` from `node`'s namespace (its role names it in the printed command).
async fn curl_from(
    role: &str,
    node: &Node,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Call {
    Call {
        ran: apps::curl_line(role, method, url, headers),
        outcome: apps::curl(&node.ns, method, url, headers).await,
    }
}

/// The app in `from` calls `to`'s service by name.
async fn call(
    mesh: &Mesh,
    from: &Workload,
    to: &Workload,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Call {
    let url = format!("http://{}{path}", service_authority(to));
    curl_from(from.name, mesh.topology.node(from), method, &url, headers).await
}

/// Runs every step; never stops early, so the summary shows the whole picture.
pub async fn run(mesh: &Mesh, report: &mut Report) -> anyhow::Result<()> {
    println!(
        "\n  (`[ns] cmd` is `ip netns exec tmq-<ns>-{} setpriv --reuid {uid} --regid {uid} \
         --clear-groups cmd`: the app's own command, captured)",
        std::process::id(),
        uid = apps::APP_UID
    );
    names(mesh, report).await;
    identity(mesh, report).await;
    trust_domains(mesh, report).await?;
    authorization(mesh, report).await;
    request_authentication(mesh, report).await?;
    custom_action(mesh, report).await;
    control_tour::policy_edit(&mesh.control, report, || async {
        call(mesh, &FRONTEND, &RATINGS, "GET", "/ratings/7", &[])
            .await
            .outcome
    })
    .await?;
    println!("\n== Certificate rotation");
    rotation(mesh, report).await;
    control_tour::operator_view(&mesh.control, report).await;
    Ok(())
}

/// The app resolves a service name; the sidecar's DNS proxy answers with the service's VIP.
async fn names(mesh: &Mesh, report: &mut Report) {
    println!("\n== Names: the sidecar's DNS proxy answers from the registry");
    let name = format!("{}.{}", REVIEWS.name, REVIEWS.namespace);
    let prefix = VIPS.trim_end_matches("0/24");
    let r = apps::resolve(&mesh.topology.node(&FRONTEND).ns, &name).await;
    let observed = match &r {
        Ok(addrs) if addrs.is_empty() => "no address".to_string(),
        Ok(addrs) => addrs.join(", "),
        Err(e) => e.clone(),
    };
    report.record_ran(
        &format!("frontend's app resolves {name}"),
        Some(&format!("[frontend] getent ahostsv4 {name}")),
        &format!("one address in {VIPS}, auto-allocated for the ServiceEntry"),
        observed,
        matches!(&r, Ok(a) if a.len() == 1 && a[0].starts_with(prefix)),
    );
}

/// Workload identity: the caller's SPIFFE ID over mTLS; plaintext refused under STRICT.
async fn identity(mesh: &Mesh, report: &mut Report) {
    println!("\n== Identity and mutual TLS");
    let c = call(mesh, &FRONTEND, &REVIEWS, "GET", "/reviews/1", &[]).await;
    let peer = peer_of(&c.outcome);
    report.record_ran(
        "frontend -> reviews by name; captured, mTLS; reviews sees frontend's SPIFFE ID",
        Some(&c.ran),
        &format!("HTTP 200, caller {}", FRONTEND.spiffe_id()),
        format!(
            "{}, caller {}",
            short_status(&c.outcome),
            peer.as_deref().unwrap_or("-")
        ),
        expect_status(&c.outcome, 200) && peer.as_deref() == Some(FRONTEND.spiffe_id().as_str()),
    );

    let reviews = mesh.topology.node(&REVIEWS);
    let url = format!("http://{}:{}/reviews/1", reviews.addr, app_port(&REVIEWS));
    let c = curl_from("outsider", mesh.topology.outsider(), "GET", &url, &[]).await;
    report.record_ran(
        "outsider without a sidecar -> reviews in plaintext (PeerAuthentication STRICT)",
        Some(&c.ran),
        "refused: no HTTP response",
        c.outcome.describe(),
        c.outcome.status().is_none(),
    );
}

/// Trust domains as boundaries: refused until federated, accepted after.
async fn trust_domains(mesh: &Mesh, report: &mut Report) -> anyhow::Result<()> {
    println!("\n== Trust domains as security boundaries");
    let c = call(mesh, &ANALYTICS, &REVIEWS, "GET", "/reviews/1", &[]).await;
    report.record_ran(
        "team-b analytics -> team-a reviews, not federated",
        Some(&c.ran),
        "refused (reviews does not trust team-b's root): a 503 from analytics' sidecar",
        describe_refusal(&c.outcome),
        c.outcome.status() != Some(200),
    );

    let before = mesh.control.versions().await;
    mesh.federate_team_a_with_team_b()?;
    let synced = mesh
        .control
        .wait_synced(&before, &[TD_A], &[&REVIEWS], Duration::from_secs(10))
        .await;
    let applied = wait_for_alias(mesh, Duration::from_secs(5)).await;
    let c = call(mesh, &ANALYTICS, &REVIEWS, "GET", "/reviews/1", &[]).await;
    let peer = peer_of(&c.outcome);
    report.record_ran(
        "federate: team-a's control plane serves team-b's root + alias, then call again",
        Some(&c.ran),
        &format!(
            "proxy-status in sync, reviews holds both, HTTP 200, caller {}",
            ANALYTICS.spiffe_id()
        ),
        format!(
            "{}, reviews {} them, {}, caller {}",
            describe_sync(&synced),
            if applied { "holds" } else { "does NOT hold" },
            short_status(&c.outcome),
            peer.as_deref().unwrap_or("-")
        ),
        synced.is_ok()
            && applied
            && expect_status(&c.outcome, 200)
            && peer.as_deref() == Some(ANALYTICS.spiffe_id().as_str()),
    );
    Ok(())
}

/// AuthorizationPolicy ALLOW by principal and path.
async fn authorization(mesh: &Mesh, report: &mut Report) {
    println!("\n== AuthorizationPolicy");
    let c = call(mesh, &FRONTEND, &RATINGS, "GET", "/ratings/7", &[]).await;
    report.record_ran(
        "frontend GET /ratings/7 (ALLOW principal frontend, path /ratings/*)",
        Some(&c.ran),
        "HTTP 200",
        c.outcome.describe(),
        expect_status(&c.outcome, 200),
    );
    let c = call(mesh, &FRONTEND, &RATINGS, "GET", "/admin/config", &[]).await;
    report.record_ran(
        "frontend GET /admin/config on ratings (path not allowed)",
        Some(&c.ran),
        "HTTP 403 RBAC: access denied",
        c.outcome.describe(),
        expect_status(&c.outcome, 403) && c.outcome.body().contains("RBAC: access denied"),
    );
    let c = call(mesh, &ANALYTICS, &RATINGS, "GET", "/ratings/7", &[]).await;
    report.record_ran(
        "team-b analytics GET /ratings/7 (trusted TLS, principal not allowed)",
        Some(&c.ran),
        "HTTP 403 RBAC: access denied",
        c.outcome.describe(),
        expect_status(&c.outcome, 403),
    );
}

/// RequestAuthentication: no token, a forged one, a valid one.
async fn request_authentication(mesh: &Mesh, report: &mut Report) -> anyhow::Result<()> {
    println!("\n== RequestAuthentication (JWT required for /api)");
    let c = call(mesh, &FRONTEND, &REVIEWS, "GET", "/api/reviews", &[]).await;
    report.record_ran(
        "GET /api/reviews without a token",
        Some(&c.ran),
        "HTTP 403 (no request principal)",
        c.outcome.describe(),
        expect_status(&c.outcome, 403),
    );
    let bearer = format!("Bearer {}", mesh.user_token("alice", true)?);
    let auth = [("authorization", bearer.as_str())];
    let c = call(mesh, &FRONTEND, &REVIEWS, "GET", "/api/reviews", &auth).await;
    report.record_ran(
        "GET /api/reviews with a forged token",
        Some(&c.ran),
        "HTTP 401",
        c.outcome.describe(),
        expect_status(&c.outcome, 401),
    );
    let bearer = format!("Bearer {}", mesh.user_token("alice", false)?);
    let auth = [("authorization", bearer.as_str())];
    let c = call(mesh, &FRONTEND, &REVIEWS, "GET", "/api/reviews", &auth).await;
    let payload = c.outcome.json().and_then(|j| {
        j.get("jwtPayload")
            .and_then(|p| p.as_str().map(str::to_string))
    });
    report.record_ran(
        "GET /api/reviews with a valid token",
        Some(&c.ran),
        "HTTP 200, app receives the verified payload",
        format!(
            "{}, x-jwt-payload {}",
            short_status(&c.outcome),
            if payload.is_some() {
                "present"
            } else {
                "absent"
            }
        ),
        expect_status(&c.outcome, 200) && payload.is_some(),
    );
    Ok(())
}

/// The CUSTOM action: the external authorizer decides, DENY still applies after it.
async fn custom_action(mesh: &Mesh, report: &mut Report) {
    println!("\n== CUSTOM action (external authorizer over Envoy's ext_authz gRPC)");
    let c = call(mesh, &FRONTEND, &PAYROLL, "GET", "/salaries/alice", &[]).await;
    report.record_ran(
        "GET /salaries/alice without approval",
        Some(&c.ran),
        "HTTP 403 from demo-authz",
        c.outcome.describe(),
        expect_status(&c.outcome, 403) && c.outcome.body().contains("demo-authz"),
    );
    let approval = [("x-demo-approval", "granted")];
    let c = call(
        mesh,
        &FRONTEND,
        &PAYROLL,
        "GET",
        "/salaries/alice",
        &approval,
    )
    .await;
    let seen = c.outcome.json().and_then(|j| {
        j.get("extAuthz")
            .and_then(|p| p.as_str().map(str::to_string))
    });
    report.record_ran(
        "GET /salaries/alice with approval",
        Some(&c.ran),
        "HTTP 200, authorizer's header reaches the app",
        format!(
            "{}, x-ext-authz {}",
            short_status(&c.outcome),
            seen.as_deref().unwrap_or("absent")
        ),
        expect_status(&c.outcome, 200) && seen.is_some(),
    );
    let c = call(
        mesh,
        &FRONTEND,
        &PAYROLL,
        "DELETE",
        "/salaries/alice",
        &approval,
    )
    .await;
    report.record_ran(
        "DELETE /salaries/alice with approval (DENY policy after CUSTOM)",
        Some(&c.ran),
        "HTTP 403 RBAC: access denied",
        c.outcome.describe(),
        expect_status(&c.outcome, 403) && c.outcome.body().contains("RBAC"),
    );
}

/// One line for a call the caller's sidecar could not deliver: its 503 with the reason it gave
/// (the `x-trustmesh-upstream-error` header, the first line of the body here), in Envoy's words.
fn describe_refusal(o: &Outcome) -> String {
    match o {
        Outcome::Response { status, body } if body.starts_with("upstream connect error") => {
            let reason = body.lines().next().unwrap_or("");
            let why = reason
                .split_once("reset reason: ")
                .map_or(reason, |(_, w)| w);
            format!("HTTP {status}, reset reason: {why}")
        }
        _ => o.describe(),
    }
}

/// Polls reviews' admin endpoint until the trust domain alias shows up in its live config.
async fn wait_for_alias(mesh: &Mesh, limit: Duration) -> bool {
    crate::report::wait_for_alias(|path| mesh.admin(&REVIEWS, path), TD_B, limit).await
}

/// Serial number of the certificate reviews' sidecar currently serves.
async fn reviews_serial(mesh: &Mesh) -> Option<String> {
    served_serial(&mesh.admin(&REVIEWS, "/certs").await)
}

/// The agent rotates reviews' certificate; a connection the app keeps open carries on.
async fn rotation(mesh: &Mesh, report: &mut Report) {
    let title = "reviews' certificate rotates; the app's open connection keeps working";
    let host = format!("{}.{}", REVIEWS.name, REVIEWS.namespace);
    let ran = format!(
        "[frontend] python3 http.client, one connection to {host}:{}",
        app_port(&REVIEWS)
    );
    let expected = "new serial, HTTP 200 before and after on one connection, and on a new one";
    let before = reviews_serial(mesh).await;
    let ns = &mesh.topology.node(&FRONTEND).ns;
    let mut conn = match KeptConnection::open(ns, &host, app_port(&REVIEWS)) {
        Ok(c) => c,
        Err(e) => {
            let observed = format!("could not start the client: {e:#}");
            report.record_ran(title, Some(&ran), expected, observed, false);
            return;
        }
    };
    let first = conn.get("/reviews/1").await;
    println!(
        "        waiting for the agent to rotate reviews' {REVIEWS_TTL_SECS}s certificate at half its lifetime..."
    );
    let deadline = Instant::now() + Duration::from_secs(REVIEWS_TTL_SECS + 10);
    let mut after = before.clone();
    while Instant::now() < deadline && after == before {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = reviews_serial(mesh).await.or(after);
    }
    let second = conn.get("/reviews/2").await;
    let fresh = call(mesh, &FRONTEND, &REVIEWS, "GET", "/reviews/3", &[]).await;
    let rotated = before.is_some() && after.is_some() && before != after;
    let same = first.local_port != 0 && first.local_port == second.local_port;
    report.record_ran(
        title,
        Some(&ran),
        expected,
        format!(
            "serial {} -> {}, {} / {} on {} / new connection {}",
            abbrev(before.as_deref()),
            abbrev(after.as_deref()),
            short_status(&first.outcome),
            short_status(&second.outcome),
            if same {
                format!("one connection (port {})", first.local_port)
            } else {
                format!(
                    "DIFFERENT connections (ports {} and {})",
                    first.local_port, second.local_port
                )
            },
            short_status(&fresh.outcome)
        ),
        rotated
            && same
            && expect_status(&first.outcome, 200)
            && expect_status(&second.outcome, 200)
            && expect_status(&fresh.outcome, 200),
    );
}
