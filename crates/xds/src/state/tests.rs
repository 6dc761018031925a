use super::*;

fn res(version: &str) -> Arc<Versioned> {
    Arc::new(Versioned {
        version: version.into(),
        body: prost_types::Any {
            type_url: "t".into(),
            value: version.as_bytes().to_vec(),
        },
    })
}

fn want(items: &[(&str, &str)]) -> ResourceMap {
    items.iter().map(|(n, v)| (n.to_string(), res(v))).collect()
}

fn names(d: &Delta) -> (Vec<&str>, Vec<&str>) {
    (
        d.updated.iter().map(|(n, _)| n.as_str()).collect(),
        d.removed.iter().map(String::as_str).collect(),
    )
}

#[test]
fn wildcard_first_request_gets_everything_then_only_changes() {
    let mut s = TypeState::default();
    s.subscribe(true, &[], &[], &HashMap::new());
    let w = want(&[("a", "1"), ("b", "1")]);
    let d = s.next(&w).unwrap();
    assert_eq!(names(&d), (vec!["a", "b"], vec![]));
    s.sent("1".into(), &d);
    assert!(
        s.next(&w).is_none(),
        "nothing while a response is unanswered"
    );
    assert_eq!(s.reply("1", None), Reply::Ack);
    assert!(s.next(&w).is_none(), "nothing changed");
    let w2 = want(&[("a", "2")]);
    let d = s.next(&w2).unwrap();
    assert_eq!(names(&d), (vec!["a"], vec!["b"]));
}

#[test]
fn an_empty_type_is_still_answered_once() {
    let mut s = TypeState::default();
    s.subscribe(true, &[], &[], &HashMap::new());
    let d = s.next(&ResourceMap::new()).unwrap();
    assert_eq!(d, Delta::default());
    s.sent("1".into(), &d);
    s.reply("1", None);
    assert!(s.next(&ResourceMap::new()).is_none());
}

#[test]
fn a_nack_keeps_what_the_client_held_and_does_not_resend_the_refused_version() {
    let mut s = TypeState::default();
    s.subscribe(true, &[], &[], &HashMap::new());
    let d = s.next(&want(&[("a", "1")])).unwrap();
    s.sent("1".into(), &d);
    s.reply("1", None);
    let bad = want(&[("a", "2")]);
    let d = s.next(&bad).unwrap();
    s.sent("2".into(), &d);
    assert_eq!(s.reply("2", Some("no".into())), Reply::Nack("no".into()));
    assert!(
        s.next(&bad).is_none(),
        "the refused version is not sent again"
    );
    // A new version is sent.
    let d = s.next(&want(&[("a", "3")])).unwrap();
    assert_eq!(names(&d), (vec!["a"], vec![]));
}

#[test]
fn stale_nonces_change_nothing() {
    let mut s = TypeState::default();
    s.subscribe(true, &[], &[], &HashMap::new());
    let d = s.next(&want(&[("a", "1")])).unwrap();
    s.sent("7".into(), &d);
    assert_eq!(s.reply("6", None), Reply::Stale);
    assert!(s.waiting());
    assert_eq!(s.reply("7", None), Reply::Ack);
    assert!(
        s.next(&want(&[("a", "1")])).is_none(),
        "a is held after the ACK"
    );
}

#[test]
fn reconnect_with_initial_versions_resends_only_what_differs() {
    let mut s = TypeState::default();
    let initial: HashMap<String, String> = [
        ("a".to_string(), "1".to_string()),
        ("gone".into(), "1".into()),
    ]
    .into_iter()
    .collect();
    s.subscribe(true, &[], &[], &initial);
    let d = s.next(&want(&[("a", "1"), ("b", "1")])).unwrap();
    assert_eq!(names(&d), (vec!["b"], vec!["gone"]));
}

#[test]
fn named_subscriptions_get_only_their_names_and_hear_about_absent_ones() {
    let mut s = TypeState::default();
    s.subscribe(true, &["a".into(), "missing".into()], &[], &HashMap::new());
    let w = want(&[("a", "1"), ("b", "1")]);
    let d = s.next(&w).unwrap();
    assert_eq!(names(&d), (vec!["a"], vec!["missing"]));
    s.sent("1".into(), &d);
    s.reply("1", None);
    s.subscribe(false, &["b".into()], &["a".into()], &HashMap::new());
    let d = s.next(&w).unwrap();
    assert_eq!(names(&d), (vec!["b"], vec!["missing"]));
}

#[test]
fn going_back_to_what_the_client_holds_after_a_nack_is_answered_so_it_can_ack() {
    let mut s = TypeState::default();
    s.subscribe(true, &[], &[], &HashMap::new());
    let d = s.next(&want(&[("a", "1")])).unwrap();
    s.sent("1".into(), &d);
    s.reply("1", None);
    let d = s.next(&want(&[("a", "2")])).unwrap();
    s.sent("2".into(), &d);
    s.reply("2", Some("bad".into()));
    // The operator puts version 1 back: nothing to send, but the client hears of it once.
    let d = s.next(&want(&[("a", "1")])).unwrap();
    assert_eq!(d, Delta::default());
    s.sent("3".into(), &d);
    assert_eq!(s.reply("3", None), Reply::Ack);
    assert!(s.next(&want(&[("a", "1")])).is_none());
}

#[test]
fn a_view_is_skipped_only_while_the_client_is_known_to_hold_it() {
    let mut s = TypeState::default();
    s.subscribe(true, &[], &[], &HashMap::new());
    let w = Arc::new(want(&[("a", "1")]));
    let d = s.next(&w).unwrap();
    s.sent("1".into(), &d);
    s.computed_from(&w, true);
    assert!(!s.in_step_with(&w), "not before the ACK");
    assert_eq!(s.reply("1", None), Reply::Ack);
    assert!(s.in_step_with(&w), "ACKed: the same map needs no diff");
    assert!(s.next(&w).is_none(), "and the diff agrees");
    let same_content = Arc::new(want(&[("a", "1")]));
    assert!(!s.in_step_with(&same_content), "another map is diffed");
    assert!(s.next(&same_content).is_none());
    s.computed_from(&same_content, false);
    assert!(s.in_step_with(&same_content));
    s.subscribe(false, &["b".to_string()], &[], &HashMap::new());
    assert!(
        !s.in_step_with(&same_content),
        "a subscription change is diffed"
    );
    let d = s.next(&same_content).unwrap();
    assert_eq!(names(&d), (vec![], vec!["b"]));
    s.sent("2".into(), &d);
    s.computed_from(&same_content, true);
    assert_eq!(s.reply("2", Some("bad".into())), Reply::Nack("bad".into()));
    assert!(!s.in_step_with(&same_content), "a NACK is diffed");
}
