use super::*;
use k8s_openapi::ByteString;

fn td() -> TrustDomain {
    TrustDomain::parse("cluster.local").unwrap()
}

fn request(user: &str, pem: &str, usages: &[&str]) -> CertificateSigningRequest {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "r"},
        "spec": {
            "signerName": SIGNER_NAME,
            "username": user,
            "request": ByteString(pem.as_bytes().to_vec()),
            "usages": usages,
        }
    }))
    .unwrap()
}

fn csr_with_dns(uri: &str, dns: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![
        rcgen::SanType::URI(uri.try_into().unwrap()),
        rcgen::SanType::DnsName(dns.try_into().unwrap()),
    ];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

#[test]
fn a_service_account_is_entitled_to_its_own_identity_only() {
    let own = "spiffe://cluster.local/ns/shop/sa/web";
    let usages = [
        "digital signature",
        "key encipherment",
        "client auth",
        "server auth",
    ];
    let pem = trustmesh_testkit::pki::csr_for(own).1;
    let ok = entitled(
        &td(),
        &request("system:serviceaccount:shop:web", &pem, &usages),
    );
    assert_eq!(ok.unwrap().as_str(), own);

    let other = entitled(
        &td(),
        &request("system:serviceaccount:shop:db", &pem, &usages),
    );
    assert!(other
        .unwrap_err()
        .contains("may obtain spiffe://cluster.local/ns/shop/sa/db only"));
    let person = entitled(&td(), &request("alice", &pem, &usages)).unwrap_err();
    assert!(person.contains("only a service account"), "{person}");
    let none = trustmesh_testkit::pki::csr(&rcgen::KeyPair::generate().unwrap(), &[]);
    let empty = entitled(
        &td(),
        &request("system:serviceaccount:shop:web", &none, &usages),
    );
    assert!(empty.unwrap_err().contains("no SPIFFE ID"));
    let dns = csr_with_dns(own, "web.shop.svc");
    let extra = entitled(
        &td(),
        &request("system:serviceaccount:shop:web", &dns, &usages),
    );
    assert!(extra.unwrap_err().contains("DNS"));
    let ca = entitled(
        &td(),
        &request("system:serviceaccount:shop:web", &pem, &["cert sign"]),
    );
    assert!(ca.unwrap_err().contains("cert sign"));
    let garbage = entitled(
        &td(),
        &request("system:serviceaccount:shop:web", "nope", &usages),
    );
    assert!(garbage.is_err());
}

#[test]
fn state_follows_conditions_and_the_certificate() {
    let pem = trustmesh_testkit::pki::csr_for("spiffe://cluster.local/ns/a/sa/b").1;
    let mut r = request("system:serviceaccount:a:b", &pem, &[]);
    assert_eq!(state(&r), State::Pending);
    let with = |conditions: serde_json::Value, cert: Option<&str>| {
        let mut s = serde_json::json!({ "conditions": conditions });
        if let Some(c) = cert {
            s["certificate"] = serde_json::to_value(ByteString(c.as_bytes().to_vec())).unwrap();
        }
        serde_json::from_value(s).unwrap()
    };
    r.status = Some(with(
        serde_json::json!([{"type": "Approved", "status": "True"}]),
        None,
    ));
    assert_eq!(state(&r), State::Approved);
    r.status = Some(with(
        serde_json::json!([{"type": "Denied", "status": "True"}]),
        None,
    ));
    assert_eq!(state(&r), State::Done);
    r.status = Some(with(
        serde_json::json!([{"type": "Approved", "status": "True"}]),
        Some("-----BEGIN CERTIFICATE-----"),
    ));
    assert_eq!(state(&r), State::Done);
}
