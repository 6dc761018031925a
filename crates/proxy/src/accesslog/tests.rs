//! Unit tests of the access log: JSON equality with serde_json, escaping, the collector.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Collector;

fn record(n: usize) -> impl FnOnce(&mut Vec<u8>) -> bool {
    move |b: &mut Vec<u8>| {
        b.extend_from_slice(format!("{{\"n\":{n}}}").as_bytes());
        true
    }
}

/// A sink the test can read while the writer thread owns it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl super::sink::Sink for Shared {}

#[test]
fn lines_from_many_threads_arrive_whole_and_none_is_lost() {
    static C: Collector = Collector::new();
    let sink = Shared::default();
    let mut writer_sink = sink.clone();
    let writer = std::thread::spawn(move || {
        let mut w = super::sink::Writer::new();
        C.run_writer(|batch| w.write(&mut writer_sink, batch))
    });
    let _ = C.writer.set(writer.thread().clone());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let buf = C.register();
                for i in 0..5_000 {
                    C.append(&buf, record(t * 10_000 + i));
                    if i % 1_000 == 0 {
                        // Let the writer go idle and park sometimes, to exercise the wake-up.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every line reaches the sink without anyone calling a flush: the writer was woken.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        seen = text.lines().map(str::to_string).collect();
        if seen.len() >= 20_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(seen.len(), 20_000);
    let mut ns: Vec<usize> = seen
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON line");
            v["n"].as_u64().unwrap() as usize
        })
        .collect();
    ns.sort_unstable();
    let want: Vec<usize> = (0..4)
        .flat_map(|t| (0..5_000).map(move |i| t * 10_000 + i))
        .collect();
    assert_eq!(ns, want);
    // The threads have ended: their drained buffers are forgotten.
    let mut rest = Vec::new();
    C.collect(&mut rest);
    assert!(rest.is_empty());
    assert!(super::lock(&C.buffers).is_empty());
}

#[test]
fn hand_written_json_is_what_serde_json_writes() {
    let mut full = super::AccessLog {
        time: crate::clock::Stamp::now(),
        direction: "inbound",
        protocol: "http",
        listener_port: 15006,
        source_address: "127.0.0.1:40000".into(),
        destination_address: "127.0.0.1:8080".into(),
        source_principal: Some("spiffe://cluster.local/ns/a/sa/b".into()),
        request_principal: Some("https://issuer.example/user-1".into()),
        destination_principal: Some("spiffe://td/ns/x/sa/y".into()),
        tls: true,
        request_id: Some("0b5ed5e2-8c4d-4c4e-9b1a-2d7f0f6f7a10".into()),
        method: Some("GET".into()),
        path: Some("/a?b=c&d=\"e\"\\f".into()),
        original_path: Some("/x/../a?b=c".into()),
        authority: Some("héllo.example:80 ✓".into()),
        status: Some(403),
        decision: "deny",
        policy: Some("ns.name".into()),
        reason: Some("tab\tnl\ncr\rbs\u{8}ff\u{c}nul\u{0}esc\u{1b}us\u{1f}del\u{7f}".into()),
        duration_ms: 12,
        bytes_received: Some(u64::MAX),
        bytes_sent: Some(0),
        upstream_cluster: Some("outbound|9080||reviews.bookinfo.svc.cluster.local".into()),
        response_flags: Some("UF"),
        response_code_details: Some("rbac_access_denied_matched_policy[none]".into()),
        connection_termination_details: Some(
            "rbac_access_denied_matched_policy[ns[a]-policy[b]-rule[0]]".into(),
        ),
        istio_dry_run_deny_shadow_engine_result: Some("denied"),
        istio_dry_run_deny_shadow_effective_policy_id: Some("ns[a]-policy[\"q\"]-rule[1]".into()),
        istio_dry_run_allow_shadow_engine_result: Some("allowed"),
        istio_dry_run_allow_shadow_effective_policy_id: Some("ns[a]-policy[c]-rule[0]".into()),
        access_log_hint: true,
        audit_policy: Some("a/audit".into()),
        // Only a configured format reads these; neither JSON writes them.
        http_version: Some("HTTP/1.1"),
        requested_server_name: Some("sni".into()),
        local_address: Some("127.0.0.1:15006".into()),
        request_headers: vec![Some("curl".into()), None],
        response_headers: vec![None],
    };
    let check = |log: &super::AccessLog| {
        let mut ours = Vec::new();
        log.write_json(&mut ours);
        let want = serde_json::to_vec(log).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(want).unwrap()
        );
    };
    check(&full);
    // Every optional field absent.
    full.source_principal = None;
    full.request_principal = None;
    full.destination_principal = None;
    full.request_id = None;
    full.method = None;
    full.path = None;
    full.original_path = None;
    full.authority = None;
    full.status = None;
    full.response_flags = None;
    full.policy = None;
    full.reason = None;
    full.bytes_received = None;
    full.bytes_sent = None;
    full.response_code_details = None;
    full.connection_termination_details = None;
    full.istio_dry_run_deny_shadow_engine_result = None;
    full.istio_dry_run_deny_shadow_effective_policy_id = None;
    full.istio_dry_run_allow_shadow_engine_result = None;
    full.istio_dry_run_allow_shadow_effective_policy_id = None;
    full.access_log_hint = false;
    full.audit_policy = None;
    full.tls = false;
    check(&full);
    check(&super::AccessLog::default());
    // Every control character, alone.
    for c in 0u8..0x20 {
        let log = super::AccessLog {
            reason: Some(char::from(c).to_string()),
            ..Default::default()
        };
        check(&log);
    }
}

#[test]
fn escape_detection_agrees_with_the_plain_check_for_every_byte_and_position() {
    let plain = |b: &[u8]| b.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
    for len in 0..20 {
        for pos in 0..len.max(1) {
            for byte in 0..=255u8 {
                let mut v = vec![b'a'; len];
                if len > 0 {
                    v[pos] = byte;
                }
                assert_eq!(super::needs_escape(&v), plain(&v), "{v:?}");
                // Neighbours with the high bit set must not hide or fake a match.
                let mut w = vec![0xffu8; len];
                if len > 0 {
                    w[pos] = byte;
                }
                assert_eq!(super::needs_escape(&w), plain(&w), "{w:?}");
            }
        }
    }
}

#[test]
fn a_full_buffer_drops_and_counts_instead_of_growing() {
    let c = Collector::new();
    let buf = c.register();
    let before = super::dropped();
    let big = vec![b'x'; 1024 * 1024];
    let mut accepted = 0;
    for _ in 0..8 {
        let line = big.clone();
        let before_len = super::lock(&buf).len();
        c.append(&buf, move |b| {
            b.extend_from_slice(&line);
            true
        });
        if super::lock(&buf).len() > before_len {
            accepted += 1;
        }
    }
    // 4 MiB of pending lines are kept; the rest is dropped and counted.
    assert_eq!(accepted, 4);
    assert!(super::dropped() >= before + 4);
    let mut out = Vec::new();
    assert!(c.collect(&mut out));
    assert_eq!(out.len(), 4 * (1024 * 1024 + 1));
    // Room again once collected.
    c.append(&buf, record(1));
    assert_eq!(super::lock(&buf).as_slice(), b"{\"n\":1}\n");
}

#[test]
fn a_record_that_fails_to_serialize_leaves_nothing_behind() {
    let c = Collector::new();
    let buf = c.register();
    c.append(&buf, |b| {
        b.extend_from_slice(b"{\"half");
        false
    });
    assert!(super::lock(&buf).is_empty());
}

#[test]
fn cached_timestamps_match_the_time_crate() {
    let base = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let cases = [
        base,
        base + Duration::from_nanos(1),
        base + Duration::from_millis(500),
        base + Duration::from_nanos(123_456_789),
        base + Duration::from_nanos(999_999_999),
        base + Duration::from_secs(1),
        base + Duration::from_secs(86_400 * 400) + Duration::from_micros(7),
        base, // back to an earlier second: the cache must not serve the later one
        SystemTime::now(),
    ];
    for t in cases {
        let want = time::OffsetDateTime::from(t)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert_eq!(crate::clock::rfc3339(t), want, "{t:?}");
    }
}
