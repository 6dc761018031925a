//! The JWT seeds are what their names say: otherwise the targets would never reach the code
//! after a signature check (valid seeds), or would not start from the attacks we know
//! (forged seeds). `fuzz/run.sh` runs these (`cargo test --lib`) before fuzzing.

use crate::{handled, verdicts, Verdicts};

fn seed(name: &str) -> String {
    std::fs::read_to_string(format!("{}/corpus/jwt/{name}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("seed {name}: {e}"))
}

const ALL: Verdicts = Verdicts {
    sidecar: true,
    agent: true,
    ca: true,
};

#[test]
fn valid_seeds_verify_everywhere() {
    for name in ["valid-es256", "valid-rs256", "valid-no-kid"] {
        assert_eq!(verdicts(&seed(name)), ALL, "{name}");
    }
}

#[test]
fn forged_and_broken_seeds_verify_nowhere() {
    for name in [
        "forged-iss",
        "forged-kid",
        "alg-none",
        "hs256-jwks-secret",
        "expired",
        "not-yet",
        "five-segments",
        "wrong-alg-family",
        "ps256-on-rs256-key",
    ] {
        assert_eq!(verdicts(&seed(name)), Verdicts::default(), "{name}");
    }
}

#[test]
fn claim_shape_seeds_are_judged_per_verifier() {
    // No `sub`: the agent needs it (the SPIFFE ID); the sidecar and the CA identify otherwise.
    let v = verdicts(&seed("no-sub"));
    assert!(!v.agent, "{v:?}");
    // `aud` as a string: the sidecar and the agent accept it; the CA asks for "istio-ca".
    let v = verdicts(&seed("aud-string"));
    assert!(v.sidecar && v.agent && !v.ca, "{v:?}");
}

#[test]
fn grpc_seeds_go_as_far_as_their_names_say() {
    let dir = format!("{}/corpus/grpc_requests", env!("CARGO_MANIFEST_DIR"));
    for (name, expected) in [
        ("ca-create", true),
        ("ca-negative-ttl", true),
        ("ca-reserved-field", true),
        // Metadata holding a NaN number: signed, and the round-trip check must not fail on it.
        ("ca-metadata-nan", true),
        ("ca-other-id", false),
        ("jwt-mint", true),
        ("wl-jwtsvid", true),
        ("wl-validate", true),
        ("wl-validate-forged", false),
    ] {
        let data = std::fs::read(format!("{dir}/{name}")).unwrap();
        assert_eq!(handled(&data), expected, "{name}");
    }
}
