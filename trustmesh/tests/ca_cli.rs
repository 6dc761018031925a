//! End-to-end tests of `trustmesh ca` and `trustmesh cert` through the built binary, with
//! openssl as the independent party for interop (chain verification, CSR creation).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_trustmesh");

fn tm(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run trustmesh")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = tm(dir, args);
    assert!(
        out.status.success(),
        "trustmesh {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Splits a PEM chain into its certificate blocks.
fn pem_blocks(text: &str) -> Vec<String> {
    text.split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|b| b.contains("BEGIN CERTIFICATE"))
        .map(str::to_string)
        .collect()
}

/// root → intermediate (plug-in CA) in `dir/root` and `dir/cluster1`.
fn make_plugin_ca(dir: &Path, td: &str) {
    ok(dir, &["ca", "init", "--trust-domain", td, "--out", "root"]);
    ok(
        dir,
        &[
            "ca",
            "init",
            "--trust-domain",
            td,
            "--out",
            "cluster1",
            "--parent",
            "root",
        ],
    );
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
    let msg = ok(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            id,
            "--ttl",
            "1h",
            "--out",
            "web",
        ],
    );
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

    let out = ok(
        d,
        &[
            "cert",
            "verify",
            "--cert",
            "web/cert-chain.pem",
            "--bundle",
            "root/root-cert.pem",
        ],
    );
    assert!(out.starts_with(&format!("valid: {id} (expires ")), "{out}");
    // A directory bundle and an explicit TD=PATH bundle work too.
    fs::create_dir(d.join("bundles")).unwrap();
    fs::copy(
        d.join("root/root-cert.pem"),
        d.join("bundles/cluster-local.pem"),
    )
    .unwrap();
    ok(
        d,
        &[
            "cert",
            "verify",
            "--cert",
            "web/cert-chain.pem",
            "--bundle",
            "bundles",
        ],
    );
    ok(
        d,
        &[
            "cert",
            "verify",
            "--cert",
            "web/cert-chain.pem",
            "--bundle",
            "cluster.local=web/root-cert.pem",
        ],
    );
}

#[test]
fn verify_rejects_foreign_bundle_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make_plugin_ca(d, "cluster.local");
    ok(
        d,
        &[
            "ca",
            "init",
            "--trust-domain",
            "cluster.local",
            "--out",
            "other",
        ],
    );
    ok(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            "spiffe://cluster.local/a",
            "--out",
            "w",
        ],
    );

    let out = tm(
        d,
        &[
            "cert",
            "verify",
            "--cert",
            "w/cert-chain.pem",
            "--bundle",
            "other/root-cert.pem",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: w/cert-chain.pem: invalid X.509-SVID: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // A bundle for another trust domain only: the leaf's domain is not trusted.
    ok(
        d,
        &[
            "ca",
            "init",
            "--trust-domain",
            "example.org",
            "--out",
            "ext",
        ],
    );
    let out = tm(
        d,
        &[
            "cert",
            "verify",
            "--cert",
            "w/cert-chain.pem",
            "--bundle",
            "ext/root-cert.pem",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("trust domain cluster.local"),
        "{}",
        stderr(&out)
    );

    // Trust-domain migration: local domain new.example with cluster.local as an alias shares
    // the local roots, so the old-domain SVID verifies; without the alias it does not.
    let migrate = [
        "cert",
        "verify",
        "--cert",
        "w/cert-chain.pem",
        "--trust-domain",
        "new.example",
    ];
    let bundle = ["--bundle", "new.example=cluster1/root-cert.pem"];
    let with_alias: Vec<&str> =
        [&migrate[..], &bundle[..], &["--alias", "cluster.local"][..]].concat();
    let out = ok(d, &with_alias);
    assert!(out.starts_with("valid: spiffe://cluster.local/a "), "{out}");
    let out = tm(d, &[&migrate[..], &bundle[..]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Bad input → 2, one line naming the file.
    for args in [
        vec![
            "cert",
            "verify",
            "--cert",
            "missing.pem",
            "--bundle",
            "other/root-cert.pem",
        ],
        vec![
            "cert",
            "verify",
            "--cert",
            "w/cert-chain.pem",
            "--bundle",
            "missing-root.pem",
        ],
        vec![
            "cert",
            "verify",
            "--cert",
            "w/key.pem",
            "--bundle",
            "other/root-cert.pem",
        ],
        vec!["cert", "inspect", "missing.pem"],
        vec![
            "ca",
            "issue",
            "--ca",
            "nowhere",
            "--spiffe-id",
            "spiffe://cluster.local/a",
            "--out",
            "x",
        ],
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

    let out = tm(
        d,
        &[
            "ca",
            "init",
            "--trust-domain",
            "cluster.local",
            "--out",
            "root",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("pass --force"), "{}", stderr(&out));
    let before = fs::read(d.join("root/ca-key.pem")).unwrap();
    ok(
        d,
        &[
            "ca",
            "init",
            "--trust-domain",
            "cluster.local",
            "--out",
            "root",
            "--force",
        ],
    );
    assert_ne!(fs::read(d.join("root/ca-key.pem")).unwrap(), before);

    let out = tm(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            "spiffe://evil.org/a",
            "--out",
            "w",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not in trust domain cluster.local"),
        "{}",
        stderr(&out)
    );

    let out = tm(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            "spiffe://cluster.local/a",
            "--ttl",
            "91d",
            "--out",
            "w",
        ],
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
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            "spiffe://cluster.local/a",
            "--ttl",
            "soon",
            "--out",
            "w",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid duration \"soon\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn openssl_accepts_our_chain_and_rsa_root() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // RSA root, ECDSA intermediate: mixed algorithms along the chain.
    ok(
        d,
        &[
            "ca",
            "init",
            "--trust-domain",
            "cluster.local",
            "--out",
            "root",
            "--key-type",
            "rsa2048",
        ],
    );
    ok(
        d,
        &[
            "ca",
            "init",
            "--trust-domain",
            "cluster.local",
            "--out",
            "cluster1",
            "--parent",
            "root",
        ],
    );
    let id = "spiffe://cluster.local/ns/bookinfo/sa/reviews";
    ok(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            id,
            "--out",
            "w",
        ],
    );

    let blocks = pem_blocks(&fs::read_to_string(d.join("w/cert-chain.pem")).unwrap());
    assert_eq!(blocks.len(), 3);
    fs::write(d.join("leaf.pem"), &blocks[0]).unwrap();
    fs::write(d.join("intermediates.pem"), &blocks[1]).unwrap();
    assert_eq!(
        blocks[2],
        fs::read_to_string(d.join("w/root-cert.pem")).unwrap()
    );

    let v = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "w/root-cert.pem",
            "-untrusted",
            "intermediates.pem",
            "leaf.pem",
        ],
    );
    assert_eq!(v.trim(), "leaf.pem: OK");
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
    openssl(
        d,
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            "k.pem",
        ],
    );
    let san = format!("subjectAltName=URI:{id}");
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "k.pem",
            "-subj",
            "/O=whatever",
            "-addext",
            &san,
            "-out",
            "good.csr",
        ],
    );

    ok(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            id,
            "--csr",
            "good.csr",
            "--out",
            "w",
        ],
    );
    assert!(!d.join("w/key.pem").exists(), "no key written for a CSR");
    let blocks = pem_blocks(&fs::read_to_string(d.join("w/cert-chain.pem")).unwrap());
    fs::write(d.join("leaf.pem"), &blocks[0]).unwrap();
    fs::write(d.join("inter.pem"), &blocks[1]).unwrap();
    assert_eq!(
        openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-pubkey"]),
        openssl(d, &["pkey", "-in", "k.pem", "-pubout"])
    );
    let v = openssl(
        d,
        &[
            "verify",
            "-CAfile",
            "w/root-cert.pem",
            "-untrusted",
            "inter.pem",
            "leaf.pem",
        ],
    );
    assert_eq!(v.trim(), "leaf.pem: OK");
    // The CSR's subject is not copied: the CA decides the content.
    let subj = openssl(d, &["x509", "-in", "leaf.pem", "-noout", "-subject"]);
    assert!(!subj.contains("whatever"), "{subj}");
    ok(
        d,
        &[
            "cert",
            "verify",
            "--cert",
            "w/cert-chain.pem",
            "--bundle",
            "w/root-cert.pem",
        ],
    );

    // A CSR for another identity is refused, with both IDs named.
    let other = "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/admin";
    openssl(
        d,
        &[
            "req", "-new", "-key", "k.pem", "-subj", "/", "-addext", other, "-out", "bad.csr",
        ],
    );
    let out = tm(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            id,
            "--csr",
            "bad.csr",
            "--out",
            "w2",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: CSR asks for spiffe://cluster.local/ns/default/sa/admin, request is for {id}"
        )
    );
    assert!(!d.join("w2").exists());

    // Into a directory whose key.pem belongs to another certificate: refused, nothing changed.
    ok(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            id,
            "--out",
            "gen",
        ],
    );
    let before = fs::read(d.join("gen/cert-chain.pem")).unwrap();
    let out = tm(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            id,
            "--csr",
            "good.csr",
            "--out",
            "gen",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("gen/key.pem: exists and is not the key"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(d.join("gen/cert-chain.pem")).unwrap(), before);
    // ...while the matching key (openssl req -key out/key.pem) is kept.
    fs::copy(d.join("k.pem"), d.join("w/key.pem")).unwrap();
    ok(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            id,
            "--csr",
            "good.csr",
            "--out",
            "w",
        ],
    );
    assert_eq!(
        fs::read(d.join("w/key.pem")).unwrap(),
        fs::read(d.join("k.pem")).unwrap()
    );

    // --csr with --key-type is a usage error.
    let out = tm(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cluster1",
            "--spiffe-id",
            id,
            "--csr",
            "good.csr",
            "--key-type",
            "rsa2048",
            "--out",
            "w3",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn issues_from_openssl_made_istio_cacerts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The shape of Istio's tools/certs output: RSA root (PKCS#1 key), intermediate, no SPIFFE URI.
    openssl(
        d,
        &["genrsa", "-traditional", "-out", "root-key.pem", "2048"],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-sha256",
            "-key",
            "root-key.pem",
            "-days",
            "3650",
            "-subj",
            "/O=Istio/CN=Root CA",
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "root-cert.pem",
        ],
    );
    fs::create_dir(d.join("cacerts")).unwrap();
    openssl(
        d,
        &[
            "genrsa",
            "-traditional",
            "-out",
            "cacerts/ca-key.pem",
            "2048",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-sha256",
            "-key",
            "cacerts/ca-key.pem",
            "-subj",
            "/O=Istio/CN=Intermediate CA/L=c1",
            "-out",
            "ca.csr",
        ],
    );
    fs::write(
        d.join("ext"),
        "basicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "730",
            "-in",
            "ca.csr",
            "-CA",
            "root-cert.pem",
            "-CAkey",
            "root-key.pem",
            "-CAcreateserial",
            "-extfile",
            "ext",
            "-out",
            "cacerts/ca-cert.pem",
        ],
    );
    fs::copy(d.join("root-cert.pem"), d.join("cacerts/root-cert.pem")).unwrap();
    let chain = fs::read_to_string(d.join("cacerts/ca-cert.pem")).unwrap()
        + &fs::read_to_string(d.join("root-cert.pem")).unwrap();
    fs::write(d.join("cacerts/cert-chain.pem"), chain).unwrap();

    let id = "spiffe://mesh.example/ns/x/sa/y";
    ok(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cacerts",
            "--trust-domain",
            "mesh.example",
            "--spiffe-id",
            id,
            "--out",
            "w",
        ],
    );
    let out = ok(
        d,
        &[
            "cert",
            "verify",
            "--cert",
            "w/cert-chain.pem",
            "--bundle",
            "mesh.example=w/root-cert.pem",
        ],
    );
    assert!(out.contains(id), "{out}");
    // Without --trust-domain the CA serves Istio's default domain and refuses this ID.
    let out = tm(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "cacerts",
            "--spiffe-id",
            id,
            "--out",
            "w2",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("trust domain cluster.local"),
        "{}",
        stderr(&out)
    );
}

/// Trust domain migration with a new intermediate under the old root: refused unless asked for
/// explicitly; then old and new SVIDs both verify for a mesh of new.example aliasing old.example.
#[test]
fn cross_trust_domain_intermediate_for_migration() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(
        d,
        &[
            "ca",
            "init",
            "--trust-domain",
            "old.example",
            "--out",
            "root",
        ],
    );
    let refused = tm(
        d,
        &[
            "ca",
            "init",
            "--trust-domain",
            "new.example",
            "--parent",
            "root",
            "--out",
            "new",
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("--cross-trust-domain"),
        "{}",
        stderr(&refused)
    );
    assert!(
        !d.join("new").join("ca-key.pem").exists(),
        "nothing written on refusal"
    );

    ok(
        d,
        &[
            "ca",
            "init",
            "--trust-domain",
            "new.example",
            "--parent",
            "root",
            "--out",
            "new",
            "--cross-trust-domain",
        ],
    );
    // The new CA serves only the new domain.
    let wrong = tm(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "new",
            "--spiffe-id",
            "spiffe://old.example/ns/a/sa/b",
            "--out",
            "x",
        ],
    );
    assert_eq!(wrong.status.code(), Some(1), "{}", stderr(&wrong));
    ok(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "new",
            "--spiffe-id",
            "spiffe://new.example/ns/shop/sa/web",
            "--out",
            "web",
        ],
    );
    ok(
        d,
        &[
            "ca",
            "issue",
            "--ca",
            "root",
            "--spiffe-id",
            "spiffe://old.example/ns/shop/sa/cart",
            "--out",
            "cart",
        ],
    );
    for svid in ["web", "cart"] {
        let out = ok(
            d,
            &[
                "cert",
                "verify",
                "--cert",
                &format!("{svid}/cert-chain.pem"),
                "--bundle",
                "new.example=root/root-cert.pem",
                "--trust-domain",
                "new.example",
                "--alias",
                "old.example",
            ],
        );
        assert!(out.contains("valid: spiffe://"), "{out}");
    }
    // Without the alias the old identity is a foreign trust domain.
    let out = tm(
        d,
        &[
            "cert",
            "verify",
            "--cert",
            "cart/cert-chain.pem",
            "--bundle",
            "new.example=root/root-cert.pem",
            "--trust-domain",
            "new.example",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}
