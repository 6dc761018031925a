use super::*;

const NS: u64 = 1;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const M: u64 = 60 * S;
const H: u64 = 60 * M;

fn nanos(text: &str) -> u64 {
    let d = Duration::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    u64::try_from(d.get().as_nanos()).unwrap()
}

// The values Go's `time.ParseDuration` documents and is tested against.
#[test]
fn parses_what_go_parses() {
    let cases: &[(&str, u64)] = &[
        ("0", 0),
        ("+0", 0),
        ("5s", 5 * S),
        ("+5s", 5 * S),
        ("1478s", 1478 * S),
        ("5.0s", 5 * S),
        ("5.6s", 5 * S + 600 * MS),
        ("5.s", 5 * S),
        (".5s", 500 * MS),
        ("1.004s", S + 4 * MS),
        ("100.00100s", 100 * S + MS),
        ("10ns", 10 * NS),
        ("11us", 11 * US),
        ("12µs", 12 * US),
        ("12μs", 12 * US),
        ("13ms", 13 * MS),
        ("15m", 15 * M),
        ("16h", 16 * H),
        ("10h", 10 * H),
        ("1h10m10s", H + 10 * M + 10 * S),
        ("3h30m", 3 * H + 30 * M),
        ("10.5s4m", 4 * M + 10 * S + 500 * MS),
        (
            "1h2m3s4ms5us6ns",
            H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS,
        ),
        ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
        ("2h45m30.5s", 2 * H + 45 * M + 30 * S + 500 * MS),
        ("52763797000ns", 52_763_797_000),
        // More digits than a float64 holds exactly, and than the fraction can use.
        ("9007199254740993ns", (1 << 53) + 1),
        ("0.3333333333333333333h", 20 * M),
        ("0.100000000000000000000h", 6 * M),
        ("0.830103483285477580700h", 49 * M + 48 * S + 372_539_827),
        // Go's largest duration.
        ("9223372036854775807ns", i64::MAX as u64),
        ("9223372036854775.807us", i64::MAX as u64),
        ("9223372036s854ms775us807ns", i64::MAX as u64),
        // Leading zeros are digits like any other.
        ("00h", 0),
        ("0s", 0),
    ];
    for (text, want) in cases {
        assert_eq!(nanos(text), *want, "{text}");
    }
}

#[test]
fn protobuf_json_durations_parse() {
    // google.protobuf.Duration's JSON form, which Istio's CRD and mesh config fields carry.
    assert_eq!(nanos("1.5s"), 1500 * MS);
    assert_eq!(nanos("0.000000001s"), 1);
    assert_eq!(nanos("86400.5s"), 86_400 * S + 500 * MS);
}

#[test]
fn refuses_what_go_refuses_and_negatives() {
    for (text, reason) in [
        ("", "empty"),
        ("+", "empty"),
        ("3", "missing unit"),
        ("10", "missing unit"),
        ("s", "expected a number"),
        (".", "expected a number"),
        (".s", "expected a number"),
        ("+.s", "expected a number"),
        ("1d", "unknown unit \"d\""),
        ("1w", "unknown unit \"w\""),
        ("5 s", "unknown unit \" s\""),
        (" 5s", "expected a number"),
        ("1h 30m", "unknown unit \"h \""),
        ("\u{FFFD}", "expected a number"),
        ("-5s", "negative durations are not allowed"),
        ("-0", "negative durations are not allowed"),
        ("-", "negative durations are not allowed"),
        ("9223372036854775808ns", "too large"),
        ("9223372036854775810ns", "too large"),
        ("9223372036854776us", "too large"),
        ("3000000h", "too large"),
        ("9223372036854775.808us", "too large"),
        ("9223372036s854ms775us808ns", "too large"),
        ("99999999999999999999h", "too large"),
    ] {
        let e = Duration::parse(text).unwrap_err();
        assert_eq!(e.reason(), reason, "{text:?}");
        assert_eq!(e.text(), text);
        assert!(
            e.to_string()
                .starts_with(&format!("invalid duration {text:?}: {reason}")),
            "{e}"
        );
    }
}

#[test]
fn formats_like_go() {
    let cases: &[(u64, &str)] = &[
        (0, "0s"),
        (1, "1ns"),
        (1100, "1.1µs"),
        (2200 * US, "2.2ms"),
        (300 * MS, "300ms"),
        (3300 * MS, "3.3s"),
        (5, "5ns"),
        (90 * S, "1m30s"),
        (4 * M + 5001 * MS, "4m5.001s"),
        (5 * H + 6 * M + 7001 * MS, "5h6m7.001s"),
        (H + 2 * M + 300 * MS, "1h2m0.3s"),
        (H + 15 * M + 30 * S + 918_273_645, "1h15m30.918273645s"),
        (8 * M + 1, "8m0.000000001s"),
        (3 * H, "3h0m0s"),
        (90 * 24 * H, "2160h0m0s"),
        (i64::MAX as u64, "2562047h47m16.854775807s"),
    ];
    for (n, want) in cases {
        let d = Duration::from(std::time::Duration::from_nanos(*n));
        assert_eq!(d.to_string(), *want);
        assert_eq!(format_go(d.get()), *want);
        // What Go prints, Go parses back.
        assert_eq!(Duration::parse(want).unwrap(), d, "{want}");
    }
}

#[test]
fn spelling_is_short_and_parses_back() {
    for (n, want) in [
        (0, "0s"),
        (500 * MS, "500ms"),
        (90 * S, "1m30s"),
        (H + 30 * M, "1h30m"),
        (7 * 24 * H, "168h"),
        (H + 5 * S, "1h5s"),
        (2 * M + 500 * MS, "2m0.5s"),
    ] {
        let d = Duration::from(std::time::Duration::from_nanos(n));
        assert_eq!(d.spelling(), want);
        assert_eq!(Duration::parse(want).unwrap(), d);
    }
}

#[test]
fn istio_millisecond_rule() {
    assert_eq!(
        Duration::parse_millis("1ms").unwrap(),
        Duration::from_millis(1)
    );
    assert_eq!(
        Duration::parse_millis("1.5s").unwrap(),
        Duration::from_millis(1500)
    );
    assert!(Duration::parse_millis("0s")
        .unwrap_err()
        .to_string()
        .contains("at least 1ms"));
    assert!(Duration::parse_millis("1.5ms")
        .unwrap_err()
        .to_string()
        .contains("whole milliseconds"));
    assert!(Duration::parse_millis("5").is_err());
}

#[test]
fn legacy_spellings_parse_marked() {
    let l = |t: &str| LegacyDuration::parse(t).unwrap();
    assert_eq!(l("90").value, Duration::from_secs(90));
    assert!(l("90").legacy);
    assert_eq!(l("7d").value, Duration::from_secs(7 * 86_400));
    assert!(l("7d").legacy);
    assert_eq!(l("1d12h").value, Duration::from_secs(36 * 3600));
    assert_eq!(l(" 24h ").value, Duration::from_secs(86_400));
    assert_eq!(l(" 24h ").given, "24h");
    for go in ["24h", "1h30m", "500ms", "0", "0s", "1.5s"] {
        assert!(!l(go).legacy, "{go}");
    }
    // Refused by both grammars: Go's reason is the one reported.
    let e = LegacyDuration::parse("soon").unwrap_err().to_string();
    assert!(e.starts_with("invalid duration \"soon\""), "{e}");
    assert!(LegacyDuration::parse("1w").is_err());
    assert!(LegacyDuration::parse("-1").is_err());
    assert!(LegacyDuration::parse("1.5d").is_err());
    let e = LegacyDuration::parse("999999999999d").unwrap_err();
    assert_eq!(e.reason(), "too large");
}

#[test]
fn serde_reads_strings_and_writes_go_format() {
    #[derive(serde::Deserialize, serde::Serialize)]
    struct T {
        d: Duration,
    }
    let t: T = serde_yaml::from_str("d: 90s").unwrap();
    assert_eq!(t.d, Duration::from_secs(90));
    assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"d":"1m30s"}"#);
    let t: T = serde_yaml::from_str("d: 0").unwrap();
    assert_eq!(t.d, Duration::ZERO);
    for bad in ["d: 5", "d: 1.5", "d: -1", "d: -1s", "d: [1]"] {
        assert!(serde_yaml::from_str::<T>(bad).is_err(), "{bad}");
    }
    let e = serde_yaml::from_str::<T>("d: 5")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("invalid duration \"5\": missing unit"), "{e}");
}

#[test]
fn serde_legacy_reads_bare_seconds() {
    #[derive(serde::Deserialize)]
    struct T {
        d: LegacyDuration,
    }
    let t: T = serde_yaml::from_str("d: 90").unwrap();
    assert_eq!((t.d.value, t.d.legacy), (Duration::from_secs(90), true));
    let t: T = serde_yaml::from_str("d: 12s").unwrap();
    assert_eq!((t.d.value, t.d.legacy), (Duration::from_secs(12), false));
    assert!(serde_yaml::from_str::<T>("d: -5").is_err());
}
