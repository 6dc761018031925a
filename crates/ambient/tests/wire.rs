//! The generated messages speak ztunnel's wire format: bytes written by hand from the upstream
//! field numbers decode to the expected messages, and our encodings are those bytes.

use prost::Message;
use trustmesh_ambient::istio::security::{
    string_match::MatchType, Action, Authorization, Group, Match, Rules, Scope,
    ServiceAccountMatch, StringMatch,
};
use trustmesh_ambient::istio::workload::{
    address, Address, NetworkAddress, Service, TunnelProtocol, Workload,
};

fn small_authorization() -> Authorization {
    Authorization {
        name: "a".into(),
        namespace: "n".into(),
        scope: Scope::Namespace as i32,
        action: Action::Deny as i32,
        groups: vec![Group {
            rules: vec![Rules {
                matches: vec![Match {
                    destination_ports: vec![80],
                    ..Match::default()
                }],
            }],
        }],
        dry_run: true,
        extensions: vec![],
    }
}

#[test]
fn authorization_bytes_use_upstream_field_numbers() {
    // name=1 "a", namespace=2 "n", scope=3 NAMESPACE(1), action=4 DENY(1),
    // groups=5 { rules=1 { matches=2 { destination_ports=9 packed [80] } } }, dry_run=6 true.
    let want: &[u8] = &[
        0x0a, 0x01, b'a', 0x12, 0x01, b'n', 0x18, 0x01, 0x20, 0x01, 0x2a, 0x07, 0x0a, 0x05, 0x12,
        0x03, 0x4a, 0x01, 0x50, 0x30, 0x01,
    ];
    assert_eq!(small_authorization().encode_to_vec(), want);
    assert_eq!(Authorization::decode(want).unwrap(), small_authorization());
}

#[test]
fn match_fields_and_string_match_variants_use_upstream_numbers() {
    let m = Match {
        principals: vec![StringMatch {
            match_type: Some(MatchType::Presence(())),
        }],
        service_accounts: vec![ServiceAccountMatch {
            namespace: "x".into(),
            service_account: "y".into(),
        }],
        not_destination_ports: vec![1],
        ..Match::default()
    };
    // principals=3 { presence=4 {} }, not_destination_ports=10 packed [1],
    // service_accounts=11 { namespace=1 "x", serviceAccount=2 "y" } — prost writes fields in
    // number order.
    let want: &[u8] = &[
        0x1a, 0x02, 0x22, 0x00, 0x52, 0x01, 0x01, 0x5a, 0x06, 0x0a, 0x01, b'x', 0x12, 0x01, b'y',
    ];
    assert_eq!(m.encode_to_vec(), want);
    assert_eq!(Match::decode(want).unwrap(), m);
}

#[test]
fn address_oneof_and_workload_numbers() {
    let w = Address {
        r#type: Some(address::Type::Workload(Workload {
            uid: "u".into(),
            tunnel_protocol: TunnelProtocol::Hbone as i32,
            ..Workload::default()
        })),
    };
    // workload=1 { tunnel_protocol=5 HBONE(1), uid=20 "u" (tag 0xa2 0x01) }.
    let want: &[u8] = &[0x0a, 0x06, 0x28, 0x01, 0xa2, 0x01, 0x01, b'u'];
    assert_eq!(w.encode_to_vec(), want);

    let s = Address {
        r#type: Some(address::Type::Service(Service {
            hostname: "h".into(),
            addresses: vec![NetworkAddress {
                network: String::new(),
                address: vec![10, 0, 0, 1],
                length: Some(0),
            }],
            ..Service::default()
        })),
    };
    // service=2 { hostname=3 "h", addresses=4 { address=2 bytes, length=3 0 (optional: kept) } }.
    let want: &[u8] = &[
        0x12, 0x0d, 0x1a, 0x01, b'h', 0x22, 0x08, 0x12, 0x04, 10, 0, 0, 1, 0x18, 0x00,
    ];
    assert_eq!(s.encode_to_vec(), want);
    assert_eq!(Address::decode(want).unwrap(), s);
}

#[test]
fn round_trip_of_a_full_workload() {
    let w = Workload {
        uid: "Kubernetes/networking.istio.io/WorkloadEntry/ns/vm".into(),
        name: "vm".into(),
        namespace: "ns".into(),
        addresses: vec![vec![10, 0, 0, 1], vec![0; 16]],
        services: [("ns/h".to_string(), Default::default())]
            .into_iter()
            .collect(),
        authorization_policies: vec!["ns/p".into()],
        capacity: Some(3),
        ..Workload::default()
    };
    let bytes = w.encode_to_vec();
    assert_eq!(Workload::decode(bytes.as_slice()).unwrap(), w);
}
