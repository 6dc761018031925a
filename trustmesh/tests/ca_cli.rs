//! End-to-end tests of `trustmesh ca` and `trustmesh cert` through the built binary, with
//! openssl as the independent party for interop (chain verification, CSR creation).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use trustmesh_testkit::pki::openssl::{self, openssl_cacerts, OsslKey};
use trustmesh_testkit::tools::{assert_success, openssl, stderr};

const BIN: &str = env!("CARGO_BIN_EXE_trustmesh");

/// `trustmesh <args>` run in `dir`, whatever its exit status.
fn tm(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run trustmesh")
}

/// [`tm`], asserting success; its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = tm(dir, args);
    assert_success(&format!("trustmesh {args:?}"), &out);
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts `out` is a failure with exit code `code` whose stderr says `text`.
fn fails_with(out: &Output, code: i32, text: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert!(err.contains(text), "{err}");
}

/// `ca init --trust-domain <td> --out <out>` and `extra`.
fn init<'a>(td: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    [&["ca", "init", "--trust-domain", td, "--out", out], extra].concat()
}

/// `ca issue --ca <ca> --spiffe-id <id> --out <out>` and `extra`.
fn issue<'a>(ca: &'a str, id: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    [
        &["ca", "issue", "--ca", ca, "--spiffe-id", id, "--out", out],
        extra,
    ]
    .concat()
}

/// `cert verify --cert <cert> --bundle <bundle>` and `extra`.
fn verify<'a>(cert: &'a str, bundle: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    [
        &["cert", "verify", "--cert", cert, "--bundle", bundle],
        extra,
    ]
    .concat()
}

/// Splits a PEM chain into its certificate blocks.
fn pem_blocks(text: &str) -> Vec<String> {
    text.split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|b| b.contains("BEGIN CERTIFICATE"))
        .map(str::to_string)
        .collect()
}

/// Writes the leaf and the intermediate of `w/cert-chain.pem` to `leaf.pem` and `inter.pem`;
/// returns all its certificate blocks.
fn split_chain(d: &Path) -> Vec<String> {
    let blocks = pem_blocks(&fs::read_to_string(d.join("w/cert-chain.pem")).unwrap());
    fs::write(d.join("leaf.pem"), &blocks[0]).unwrap();
    fs::write(d.join("inter.pem"), &blocks[1]).unwrap();
    blocks
}

/// openssl's verdict on `leaf.pem` against `w/root-cert.pem`, `inter.pem` as the intermediate.
fn openssl_verify(d: &Path) -> String {
    let args = [
        "verify",
        "-CAfile",
        "w/root-cert.pem",
        "-untrusted",
        "inter.pem",
    ];
    openssl(d, &[&args[..], &["leaf.pem"]].concat())
}

/// root → intermediate (plug-in CA) in `dir/root` and `dir/cluster1`.
fn make_plugin_ca(dir: &Path, td: &str) {
    ok(dir, &init(td, "root", &[]));
    ok(dir, &init(td, "cluster1", &["--parent", "root"]));
}

#[test]
fn init_issue_inspect_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make_plugin_ca(d, "cluster.local");
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ] {
        assert!(d.join("cluster1").join(f).is_file(), "{f}");
    }
    assert_eq!(
        fs::read(d.join("cluster1/root-cert.pem")).unwrap(),
        fs::read(d.join("root/root-cert.pem")).unwrap()
    );

    let id = "spiffe://cluster.local/ns/default/sa/web";
    let msg = ok(d, &issue("cluster1", id, "web", &["--ttl", "1h"]));
    assert!(msg.contains(id) && msg.contains("(1h0m0s)"), "{msg}");

    let json = ok(
        d,
        &["cert", "inspect", "web/cert-chain.pem", "--output", "json"],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let certs = v.as_array().unwrap();
    assert_eq!(certs.len(), 3);
    assert_eq!(certs[0]["spiffe_id"], id);
    assert_eq!(certs[0]["trust_domain"], "cluster.local");
    assert_eq!(certs[0]["role"], "leaf");
    assert_eq!(certs[0]["is_ca"], false);
    assert_eq!(certs[0]["key_type"], "ECDSA P-256");
    let left = certs[0]["remaining_seconds"].as_i64().unwrap();
    assert!((3500..=3600).contains(&left), "{left}");
    assert!(
        certs[0]["remaining"].as_str().unwrap().starts_with("59m")
            || certs[0]["remaining"] == "1h0m"
    );
    assert_eq!(certs[1]["role"], "intermediate");
    assert_eq!(certs[1]["path_len_constraint"], 0);
    assert_eq!(certs[2]["role"], "root");
    assert_eq!(certs[2]["subject"], "O=cluster.local");

    let text = ok(d, &["cert", "inspect", "web/cert-chain.pem"]);
    assert!(text.contains(&format!("SPIFFE ID:     {id}")), "{text}");
    assert!(text.contains("CA:            yes (pathlen 0)"), "{text}");

    let out = ok(d, &verify("web/cert-chain.pem", "root/root-cert.pem", &[]));
    assert!(out.starts_with(&format!("valid: {id} (expires ")), "{out}");
    // A directory bundle and an explicit TD=PATH bundle work too.
    fs::create_dir(d.join("bundles")).unwrap();
    fs::copy(
        d.join("root/root-cert.pem"),
        d.join("bundles/cluster-local.pem"),
    )
    .unwrap();
    ok(d, &verify("web/cert-chain.pem", "bundles", &[]));
    ok(
        d,
        &verify("web/cert-chain.pem", "cluster.local=web/root-cert.pem", &[]),
    );
}

#[test]
fn verify_rejects_foreign_bundle_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make_plugin_ca(d, "cluster.local");
    ok(d, &init("cluster.local", "other", &[]));
    ok(d, &issue("cluster1", "spiffe://cluster.local/a", "w", &[]));

    let out = tm(d, &verify("w/cert-chain.pem", "other/root-cert.pem", &[]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: w/cert-chain.pem: invalid X.509-SVID: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // A bundle for another trust domain only: the leaf's domain is not trusted.
    ok(d, &init("example.org", "ext", &[]));
    let out = tm(d, &verify("w/cert-chain.pem", "ext/root-cert.pem", &[]));
    fails_with(&out, 1, "trust domain cluster.local");

    // Trust-domain migration: local domain new.example with cluster.local as an alias shares
    // the local roots, so the old-domain SVID verifies; without the alias it does not.
    let migrate = |alias: &[&'static str]| {
        let local = ["--trust-domain", "new.example"];
        let bundle = "new.example=cluster1/root-cert.pem";
        verify("w/cert-chain.pem", bundle, &[&local[..], alias].concat())
    };
    let out = ok(d, &migrate(&["--alias", "cluster.local"]));
    assert!(out.starts_with("valid: spiffe://cluster.local/a "), "{out}");
    let out = tm(d, &migrate(&[]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Bad input → 2, one line naming the file.
    for args in [
        verify("missing.pem", "other/root-cert.pem", &[]),
        verify("w/cert-chain.pem", "missing-root.pem", &[]),
        verify("w/key.pem", "other/root-cert.pem", &[]),
        vec!["cert", "inspect", "missing.pem"],
        issue("nowhere", "spiffe://cluster.local/a", "x", &[]),
    ] {
        let out = tm(d, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        let named = [
            "missing.pem",
            "missing-root.pem",
            "w/key.pem",
            "nowhere/ca-cert.pem",
        ];
        assert!(named.iter().any(|n| err.contains(n)), "{args:?}: {err}");
    }
    assert!(!d.join("x").exists());
}

#[test]
fn issue_refusals_and_overwrite_protection() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make_plugin_ca(d, "cluster.local");

    let out = tm(d, &init("cluster.local", "root", &[]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("pass --force"), "{}", stderr(&out));
    let before = fs::read(d.join("root/ca-key.pem")).unwrap();
    ok(d, &init("cluster.local", "root", &["--force"]));
    assert_ne!(fs::read(d.join("root/ca-key.pem")).unwrap(), before);

    let out = tm(d, &issue("cluster1", "spiffe://evil.org/a", "w", &[]));
    fails_with(&out, 1, "is not in trust domain cluster.local");

    let out = tm(
        d,
        &issue(
            "cluster1",
            "spiffe://cluster.local/a",
            "w",
            &["--ttl", "91d"],
        ),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("requested TTL 2184h0m0s is greater than the max allowed TTL 2160h0m0s"),
        "{}",
        stderr(&out)
    );
    // Day units still parse, with a warning naming Go's spelling.
    assert!(
        stderr(&out).contains(
            "warning: trustmesh ca issue: `--ttl 91d` is deprecated; write `--ttl 2184h`"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("w").exists(), "nothing written on refusal");

    let out = tm(
        d,
        &issue(
            "cluster1",
            "spiffe://cluster.local/a",
            "w",
            &["--ttl", "soon"],
        ),
    );
    fails_with(&out, 2, "invalid duration \"soon\"");
}

#[test]
fn openssl_accepts_our_chain_and_rsa_root() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // RSA root, ECDSA intermediate: mixed algorithms along the chain.
    ok(
        d,
        &init("cluster.local", "root", &["--key-type", "rsa2048"]),
    );
    ok(d, &init("cluster.local", "cluster1", &["--parent", "root"]));
    let id = "spiffe://cluster.local/ns/bookinfo/sa/reviews";
    ok(d, &issue("cluster1", id, "w", &[]));

    let blocks = split_chain(d);
    assert_eq!(blocks.len(), 3);
    assert_eq!(
        blocks[2],
        fs::read_to_string(d.join("w/root-cert.pem")).unwrap()
    );

    assert_eq!(openssl_verify(d).trim(), "leaf.pem: OK");
    // Without the intermediate openssl must fail: the test can tell a broken chain apart.
    let bad = Command::new("openssl")
        .args(["verify", "-CAfile", "w/root-cert.pem", "leaf.pem"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!bad.status.success());

    let text = openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(text.contains(&format!("URI:{id}")), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    let root_text = openssl(d, &["x509", "-in", "w/root-cert.pem", "-noout", "-text"]);
    assert!(
        root_text.contains("Public-Key: (2048 bit)")
            && root_text.contains("URI:spiffe://cluster.local")
    );

    // The key we wrote is the leaf's key, and is readable by openssl.
    let leaf_pub = openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-pubkey"]);
    let key_pub = openssl(d, &["pkey", "-in", "w/key.pem", "-pubout"]);
    assert_eq!(leaf_pub, key_pub);
}

#[test]
fn openssl_csr_is_accepted_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make_plugin_ca(d, "cluster.local");
    let id = "spiffe://cluster.local/ns/default/sa/sleep";
    let key = [
        "ecparam",
        "-genkey",
        "-name",
        "prime256v1",
        "-noout",
        "-out",
        "k.pem",
    ];
    openssl(d, &key);
    openssl::csr(d, "k.pem", "/O=whatever", id, "good.csr");

    ok(d, &issue("cluster1", id, "w", &["--csr", "good.csr"]));
    assert!(!d.join("w/key.pem").exists(), "no key written for a CSR");
    split_chain(d);
    assert_eq!(
        openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-pubkey"]),
        openssl(d, &["pkey", "-in", "k.pem", "-pubout"])
    );
    assert_eq!(openssl_verify(d).trim(), "leaf.pem: OK");
    // The CSR's subject is not copied: the CA decides the content.
    let subj = openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-subject"]);
    assert!(!subj.contains("whatever"), "{subj}");
    ok(d, &verify("w/cert-chain.pem", "w/root-cert.pem", &[]));

    // A CSR for another identity is refused, with both IDs named.
    let other = "spiffe://cluster.local/ns/default/sa/admin";
    openssl::csr(d, "k.pem", "/", other, "bad.csr");
    let out = tm(d, &issue("cluster1", id, "w2", &["--csr", "bad.csr"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: CSR asks for spiffe://cluster.local/ns/default/sa/admin, request is for {id}"
        )
    );
    assert!(!d.join("w2").exists());

    // Into a directory whose key.pem belongs to another certificate: refused, nothing changed.
    ok(d, &issue("cluster1", id, "gen", &[]));
    let before = fs::read(d.join("gen/cert-chain.pem")).unwrap();
    let out = tm(d, &issue("cluster1", id, "gen", &["--csr", "good.csr"]));
    fails_with(&out, 2, "gen/key.pem: exists and is not the key");
    assert_eq!(fs::read(d.join("gen/cert-chain.pem")).unwrap(), before);
    // ...while the matching key (openssl req -key out/key.pem) is kept.
    fs::copy(d.join("k.pem"), d.join("w/key.pem")).unwrap();
    ok(d, &issue("cluster1", id, "w", &["--csr", "good.csr"]));
    assert_eq!(
        fs::read(d.join("w/key.pem")).unwrap(),
        fs::read(d.join("k.pem")).unwrap()
    );

    // --csr with --key-type is a usage error.
    let out = tm(
        d,
        &issue(
            "cluster1",
            id,
            "w3",
            &["--csr", "good.csr", "--key-type", "rsa2048"],
        ),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn issues_from_openssl_made_istio_cacerts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The shape of Istio's tools/certs output: RSA root (PKCS#1 key), intermediate, no SPIFFE URI.
    fs::create_dir(d.join("cacerts")).unwrap();
    let rsa = OsslKey::RsaPkcs1Small;
    openssl_cacerts(&d.join("cacerts"), rsa, rsa, None);

    let id = "spiffe://mesh.example/ns/x/sa/y";
    ok(
        d,
        &issue("cacerts", id, "w", &["--trust-domain", "mesh.example"]),
    );
    let out = ok(
        d,
        &verify("w/cert-chain.pem", "mesh.example=w/root-cert.pem", &[]),
    );
    assert!(out.contains(id), "{out}");
    // Without --trust-domain the CA serves Istio's default domain and refuses this ID.
    let out = tm(d, &issue("cacerts", id, "w2", &[]));
    fails_with(&out, 1, "trust domain cluster.local");
}

/// cert-manager's `kubernetes.io/tls` secret as a CA directory (files made by openssl, the
/// root after the CA certificate in tls.crt as cert-manager writes a whole chain): the CLI
/// issues from it, openssl verifies the chain to ca.crt; `ca init` will not write a CA beside
/// it; a secret missing tls.key is refused naming the file, as an unusable input (exit 2).
#[test]
fn issues_from_a_cert_manager_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::create_dir(d.join("made")).unwrap();
    openssl_cacerts(&d.join("made"), OsslKey::EcPkcs8, OsslKey::EcSec1, None);
    openssl::cert_manager_layout(&d.join("made"), &d.join("cm"), true);

    let id = "spiffe://mesh.example/ns/x/sa/y";
    let td = ["--trust-domain", "mesh.example", "--key-type", "rsa2048"];
    let said = ok(d, &issue("cm", id, "w", &td));
    assert!(said.contains(&format!("issued {id}")), "{said}");
    let blocks = split_chain(d);
    assert_eq!(
        blocks.len(),
        3,
        "leaf, tls.crt's CA certificate, ca.crt's root"
    );
    assert_eq!(
        fs::read_to_string(d.join("w/root-cert.pem")).unwrap(),
        fs::read_to_string(d.join("cm/ca.crt")).unwrap()
    );
    assert_eq!(openssl_verify(d).trim(), "leaf.pem: OK");
    let text = openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(text.contains(&format!("URI:{id}")), "{text}");
    assert!(text.contains("rsaEncryption"), "{text}");

    // A CA written beside them would never be read: refused even with --force.
    let out = tm(d, &init("mesh.example", "cm", &["--force"]));
    fails_with(&out, 1, "holds a cert-manager CA (tls.crt exists)");
    assert!(!d.join("cm/ca-cert.pem").exists(), "nothing written");

    fs::remove_file(d.join("cm/tls.key")).unwrap();
    let out = tm(d, &issue("cm", id, "w2", &td));
    fails_with(
        &out,
        2,
        "incomplete cert-manager layout (kubernetes.io/tls secret): tls.crt, ca.crt present but tls.key missing",
    );
}

/// Trust domain migration with a new intermediate under the old root: refused unless asked for
/// explicitly; then old and new SVIDs both verify for a mesh of new.example aliasing old.example.
#[test]
fn cross_trust_domain_intermediate_for_migration() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &init("old.example", "root", &[]));
    let refused = tm(d, &init("new.example", "new", &["--parent", "root"]));
    fails_with(&refused, 2, "--cross-trust-domain");
    assert!(
        !d.join("new").join("ca-key.pem").exists(),
        "nothing written on refusal"
    );

    ok(
        d,
        &init(
            "new.example",
            "new",
            &["--parent", "root", "--cross-trust-domain"],
        ),
    );
    // The new CA serves only the new domain.
    let wrong = tm(d, &issue("new", "spiffe://old.example/ns/a/sa/b", "x", &[]));
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    ok(
        d,
        &issue("new", "spiffe://new.example/ns/shop/sa/web", "web", &[]),
    );
    ok(
        d,
        &issue("root", "spiffe://old.example/ns/shop/sa/cart", "cart", &[]),
    );
    for svid in ["web", "cart"] {
        let out = ok(
            d,
            &verify(
                &format!("{svid}/cert-chain.pem"),
                "new.example=root/root-cert.pem",
                &["--trust-domain", "new.example", "--alias", "old.example"],
            ),
        );
        assert!(out.contains("valid: spiffe://"), "{out}");
    }
    // Without the alias the old identity is a foreign trust domain.
    let out = tm(
        d,
        &verify(
            "cart/cert-chain.pem",
            "new.example=root/root-cert.pem",
            &["--trust-domain", "new.example"],
        ),
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}
