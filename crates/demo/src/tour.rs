//! The scripted tour: each step makes real calls through the mesh and compares what happened
//! with what Istio's security model says must happen.

use std::time::{Duration, Instant};

use crate::client::{call, Connection};
use crate::mesh::Mesh;
use crate::report::{
    abbrev, describe_sync, expect_status, peer_of, served_serial, short_status, via, Report,
};
use crate::workloads::{
    ANALYTICS, FRONTEND, PAYROLL, RATINGS, REVIEWS, REVIEWS_TTL_SECS, TD_A, TD_B,
};

/// Runs every step; never stops early, so the summary shows the whole picture.
pub async fn run(mesh: &Mesh, report: &mut Report) -> anyhow::Result<()> {
    identity(mesh, report).await;
    trust_domains(mesh, report).await?;
    authorization(mesh, report).await;
    request_authentication(mesh, report).await?;
    custom_action(mesh, report).await;
    crate::control_tour::policy_edit(&mesh.control, report, || {
        via(mesh, &FRONTEND, &RATINGS, "GET", "/ratings/7", &[])
    })
    .await?;
    println!("\n== Certificate rotation");
    rotation(mesh, report).await;
    crate::control_tour::operator_view(&mesh.control, report).await;
    Ok(())
}

/// Workload identity: the caller's SPIFFE ID over mTLS; plaintext refused under STRICT.
async fn identity(mesh: &Mesh, report: &mut Report) -> () {
    println!("\n== Identity and mutual TLS");
    let o = via(mesh, &FRONTEND, &REVIEWS, "GET", "/reviews/1", &[]).await;
    let peer = peer_of(&o);
    report.record(
        "frontend -> reviews over mTLS; reviews sees frontend's SPIFFE ID",
        &format!("HTTP 200, caller {}", FRONTEND.spiffe_id()),
        format!(
            "{}, caller {}",
            short_status(&o),
            peer.as_deref().unwrap_or("-")
        ),
        expect_status(&o, 200) && peer.as_deref() == Some(FRONTEND.spiffe_id().as_str()),
    );

    let inbound = mesh
        .sidecar(&REVIEWS)
        .inbound
        .expect("reviews has an inbound listener");
    let o = call(inbound, "GET", "/reviews/1", &[]).await;
    report.record(
        "plaintext client -> reviews (PeerAuthentication STRICT)",
        "refused: no HTTP response",
        o.describe(),
        o.status().is_none(),
    );
}

/// Trust domains as boundaries: refused until federated, accepted after.
async fn trust_domains(mesh: &Mesh, report: &mut Report) -> anyhow::Result<()> {
    println!("\n== Trust domains as security boundaries");
    let o = via(mesh, &ANALYTICS, &REVIEWS, "GET", "/reviews/1", &[]).await;
    report.record(
        "team-b analytics -> team-a reviews, not federated",
        "refused (reviews does not trust team-b's root)",
        o.describe(),
        o.status() != Some(200),
    );

    let before = mesh.control.versions().await;
    mesh.federate_team_a_with_team_b()?;
    let synced = mesh
        .control
        .wait_synced(&before, &[TD_A], &[&REVIEWS], Duration::from_secs(10))
        .await;
    let applied = wait_for_alias(mesh, Duration::from_secs(5)).await;
    let o = via(mesh, &ANALYTICS, &REVIEWS, "GET", "/reviews/1", &[]).await;
    let peer = peer_of(&o);
    report.record(
        "federate: team-a's control plane serves team-b's root + alias, then call again",
        &format!(
            "proxy-status in sync, reviews holds both, HTTP 200, caller {}",
            ANALYTICS.spiffe_id()
        ),
        format!(
            "{}, reviews {} them, {}, caller {}",
            describe_sync(&synced),
            if applied { "holds" } else { "does NOT hold" },
            short_status(&o),
            peer.as_deref().unwrap_or("-")
        ),
        synced.is_ok()
            && applied
            && expect_status(&o, 200)
            && peer.as_deref() == Some(ANALYTICS.spiffe_id().as_str()),
    );
    Ok(())
}

/// AuthorizationPolicy ALLOW by principal and path.
async fn authorization(mesh: &Mesh, report: &mut Report) -> () {
    println!("\n== AuthorizationPolicy");
    let o = via(mesh, &FRONTEND, &RATINGS, "GET", "/ratings/7", &[]).await;
    report.record(
        "frontend GET /ratings/7 (ALLOW principal frontend, path /ratings/*)",
        "HTTP 200",
        o.describe(),
        expect_status(&o, 200),
    );
    let o = via(mesh, &FRONTEND, &RATINGS, "GET", "/admin/config", &[]).await;
    report.record(
        "frontend GET /admin/config on ratings (path not allowed)",
        "HTTP 403 RBAC: access denied",
        o.describe(),
        expect_status(&o, 403) && o.body().contains("RBAC: access denied"),
    );
    let o = via(mesh, &ANALYTICS, &RATINGS, "GET", "/ratings/7", &[]).await;
    report.record(
        "team-b analytics GET /ratings/7 (trusted TLS, principal not allowed)",
        "HTTP 403 RBAC: access denied",
        o.describe(),
        expect_status(&o, 403),
    );
}

/// RequestAuthentication: no token, a forged one, a valid one.
async fn request_authentication(mesh: &Mesh, report: &mut Report) -> anyhow::Result<()> {
    println!("\n== RequestAuthentication (JWT required for /api)");
    let o = via(mesh, &FRONTEND, &REVIEWS, "GET", "/api/reviews", &[]).await;
    report.record(
        "GET /api/reviews without a token",
        "HTTP 403 (no request principal)",
        o.describe(),
        expect_status(&o, 403),
    );
    let forged = mesh.user_token("alice", true)?;
    let bearer = format!("Bearer {forged}");
    let o = via(
        mesh,
        &FRONTEND,
        &REVIEWS,
        "GET",
        "/api/reviews",
        &[("authorization", &bearer)],
    )
    .await;
    report.record(
        "GET /api/reviews with a forged token",
        "HTTP 401",
        o.describe(),
        expect_status(&o, 401),
    );
    let token = mesh.user_token("alice", false)?;
    let bearer = format!("Bearer {token}");
    let o = via(
        mesh,
        &FRONTEND,
        &REVIEWS,
        "GET",
        "/api/reviews",
        &[("authorization", &bearer)],
    )
    .await;
    let payload = o.json().and_then(|j| {
        j.get("jwtPayload")
            .and_then(|p| p.as_str().map(str::to_string))
    });
    report.record(
        "GET /api/reviews with a valid token",
        "HTTP 200, app receives the verified payload",
        format!(
            "{}, x-jwt-payload {}",
            short_status(&o),
            if payload.is_some() {
                "present"
            } else {
                "absent"
            }
        ),
        expect_status(&o, 200) && payload.is_some(),
    );
    Ok(())
}

/// The CUSTOM action: the external authorizer decides, DENY still applies after it.
async fn custom_action(mesh: &Mesh, report: &mut Report) -> () {
    println!("\n== CUSTOM action (external authorizer over Envoy's ext_authz gRPC)");
    let o = via(mesh, &FRONTEND, &PAYROLL, "GET", "/salaries/alice", &[]).await;
    report.record(
        "GET /salaries/alice without approval",
        "HTTP 403 from demo-authz",
        o.describe(),
        expect_status(&o, 403) && o.body().contains("demo-authz"),
    );
    let approval = [("x-demo-approval", "granted")];
    let o = via(
        mesh,
        &FRONTEND,
        &PAYROLL,
        "GET",
        "/salaries/alice",
        &approval,
    )
    .await;
    let seen = o.json().and_then(|j| {
        j.get("extAuthz")
            .and_then(|p| p.as_str().map(str::to_string))
    });
    report.record(
        "GET /salaries/alice with approval",
        "HTTP 200, authorizer's header reaches the app",
        format!(
            "{}, x-ext-authz {}",
            short_status(&o),
            seen.as_deref().unwrap_or("absent")
        ),
        expect_status(&o, 200) && seen.is_some(),
    );
    let o = via(
        mesh,
        &FRONTEND,
        &PAYROLL,
        "DELETE",
        "/salaries/alice",
        &approval,
    )
    .await;
    report.record(
        "DELETE /salaries/alice with approval (DENY policy after CUSTOM)",
        "HTTP 403 RBAC: access denied",
        o.describe(),
        expect_status(&o, 403) && o.body().contains("RBAC"),
    );
}

/// Polls reviews' admin endpoint until the trust domain alias shows up in its live config.
async fn wait_for_alias(mesh: &Mesh, limit: Duration) -> bool {
    let admin = mesh.sidecar(&REVIEWS).admin;
    crate::report::wait_for_alias(|path| call(admin, "GET", path, &[]), TD_B, limit).await
}

/// Serial number of the certificate reviews' sidecar currently serves.
async fn reviews_serial(mesh: &Mesh) -> Option<String> {
    served_serial(&call(mesh.sidecar(&REVIEWS).admin, "GET", "/certs", &[]).await)
}

async fn rotation(mesh: &Mesh, report: &mut Report) {
    let before = reviews_serial(mesh).await;
    let mut conn = match Connection::open(mesh.route(&FRONTEND, &REVIEWS)).await {
        Ok(c) => c,
        Err(e) => {
            report.record(
                "reviews' certificate rotates; an open connection keeps working",
                "new serial, HTTP 200 before and after on one connection",
                format!("could not connect: {e:#}"),
                false,
            );
            return;
        }
    };
    let first = conn.send("GET", "/reviews/1", &[]).await;
    println!(
        "        waiting for the agent to rotate reviews' {}s certificate at half its lifetime...",
        REVIEWS_TTL_SECS
    );
    let deadline = Instant::now() + Duration::from_secs(REVIEWS_TTL_SECS + 10);
    let mut after = before.clone();
    while Instant::now() < deadline && after == before {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = reviews_serial(mesh).await.or(after);
    }
    let second = conn.send("GET", "/reviews/2", &[]).await;
    let fresh = via(mesh, &FRONTEND, &REVIEWS, "GET", "/reviews/3", &[]).await;
    let rotated = before.is_some() && after.is_some() && before != after;
    report.record(
        "reviews' certificate rotates; an open connection keeps working",
        "new serial, HTTP 200 before and after on one connection, and on a new one",
        format!(
            "serial {} -> {}, {} / {} / new connection {}",
            abbrev(before.as_deref()),
            abbrev(after.as_deref()),
            short_status(&first),
            short_status(&second),
            short_status(&fresh)
        ),
        rotated
            && expect_status(&first, 200)
            && expect_status(&second, 200)
            && expect_status(&fresh, 200),
    );
}
