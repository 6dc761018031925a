use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::*;

fn query(id: u16, name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m
}

fn refused(bytes: &[u8]) -> (Message, Refusal) {
    match read_query(bytes) {
        Inbound::Refuse(m, why) => (m, why),
        Inbound::Query(_) => panic!("read as a query"),
        Inbound::Drop => panic!("dropped"),
    }
}

#[test]
fn a_query_is_read() {
    let bytes = query(7, "reviews.", RecordType::A).to_vec().unwrap();
    let Inbound::Query(q) = read_query(&bytes) else {
        panic!("not read as a query");
    };
    assert_eq!(q.id(), 7);
    assert_eq!(q.queries().len(), 1);
}

#[test]
fn messages_without_an_answerable_header_are_dropped() {
    assert!(matches!(read_query(&[]), Inbound::Drop));
    assert!(matches!(read_query(&[1, 2, 3]), Inbound::Drop));
    let mut response = query(7, "reviews.", RecordType::A);
    response.set_message_type(MessageType::Response);
    assert!(matches!(
        read_query(&response.to_vec().unwrap()),
        Inbound::Drop
    ));
}

#[test]
fn other_opcodes_get_notimp_with_the_id() {
    let mut notify = query(9, "reviews.", RecordType::SOA);
    notify.set_op_code(OpCode::Notify);
    let (m, why) = refused(&notify.to_vec().unwrap());
    assert_eq!(why, Refusal::NotImplemented);
    assert_eq!(m.id(), 9);
    assert_eq!(m.response_code(), ResponseCode::NotImp);
    assert_eq!(m.message_type(), MessageType::Response);
}

#[test]
fn wrong_counts_and_garbage_get_formerr_with_the_id() {
    let mut two = query(11, "a.", RecordType::A);
    two.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
    let (m, why) = refused(&two.to_vec().unwrap());
    assert_eq!(
        (why, m.id(), m.response_code()),
        (Refusal::Malformed, 11, ResponseCode::FormErr)
    );

    let mut none = query(12, "a.", RecordType::A);
    none.take_queries();
    assert_eq!(
        refused(&none.to_vec().unwrap()).0.response_code(),
        ResponseCode::FormErr
    );

    // A header announcing one question followed by a name running past the end.
    let mut bytes = query(13, "reviews.", RecordType::A).to_vec().unwrap();
    bytes.truncate(15);
    let (m, why) = refused(&bytes);
    assert_eq!((why, m.id()), (Refusal::Malformed, 13));
}

#[test]
fn a_large_answer_is_cut_to_the_limit_with_tc() {
    let q = query(1, "big.example.", RecordType::A);
    let mut m = reply(&q, ResponseCode::NoError);
    for i in 0..100u8 {
        m.add_answer(Record::from_rdata(
            Name::from_ascii("big.example.").unwrap(),
            30,
            RData::A(A::new(10, 0, 0, i)),
        ));
    }
    assert!(m.to_vec().unwrap().len() > 512);
    let cut = Message::from_vec(&encode(&m, 512).unwrap()).unwrap();
    assert!(cut.truncated());
    assert!(!cut.answers().is_empty() && cut.answers().len() < 100);
    assert_eq!(cut.queries(), q.queries());
    assert!(cut.to_vec().unwrap().len() <= 512);
    // One more answer would not have fitted.
    let mut one_more = cut.clone();
    one_more.add_answer(m.answers()[cut.answers().len()].clone());
    assert!(one_more.to_vec().unwrap().len() > 512);

    let whole = Message::from_vec(&encode(&m, TCP_LIMIT).unwrap()).unwrap();
    assert!(!whole.truncated());
    assert_eq!(whole.answers().len(), 100);
}

#[test]
fn additional_records_go_first_and_need_no_tc() {
    let q = query(1, "x.example.", RecordType::A);
    let mut m = reply(&q, ResponseCode::NoError);
    let name = Name::from_ascii("x.example.").unwrap();
    m.add_answer(Record::from_rdata(
        name.clone(),
        30,
        RData::A(A::new(10, 0, 0, 1)),
    ));
    for i in 0..60u8 {
        let glue = Name::from_ascii(format!("ns{i}.other.example.")).unwrap();
        m.add_additional(Record::from_rdata(glue, 30, RData::A(A::new(10, 1, 0, i))));
    }
    let cut = Message::from_vec(&encode(&m, 512).unwrap()).unwrap();
    assert!(!cut.truncated());
    assert_eq!(cut.answers().len(), 1);
    assert!(cut.additionals().is_empty());
}

#[test]
fn an_upstream_message_answers_only_the_query_asked() {
    let asked = query(100, "Example.COM.", RecordType::A);
    let q = asked.query().unwrap();
    let mut r = reply(
        &query(100, "example.com.", RecordType::A),
        ResponseCode::NoError,
    );
    assert!(answers(&r, 100, q), "names compare without case");
    assert!(!answers(&r, 101, q), "another ID");
    let mut other_type = reply(
        &query(100, "example.com.", RecordType::AAAA),
        ResponseCode::NoError,
    );
    assert!(!answers(&other_type, 100, q));
    other_type.set_message_type(MessageType::Query);
    assert!(!answers(&other_type, 100, q), "not a response");
    let other_name = reply(
        &query(100, "example.org.", RecordType::A),
        ResponseCode::NoError,
    );
    assert!(!answers(&other_name, 100, q));
    r.take_queries();
    assert!(!answers(&r, 100, q), "NOERROR without the question");
    r.set_response_code(ResponseCode::FormErr);
    assert!(answers(&r, 100, q), "an error without the question");
}

#[test]
fn with_id_replaces_only_the_id() {
    let bytes = query(0x1234, "a.", RecordType::A).to_vec().unwrap();
    let out = with_id(&bytes, 0xbeef);
    assert_eq!(&out[..2], &[0xbe, 0xef]);
    assert_eq!(&out[2..], &bytes[2..]);
    assert!(with_id(&[], 1).is_empty());
}

#[test]
fn the_udp_limit_is_the_edns_size_and_at_least_512() {
    let mut q = query(1, "a.", RecordType::A);
    assert_eq!(udp_limit(&q), 512);
    let mut edns = hickory_proto::op::Edns::new();
    edns.set_max_payload(4096);
    q.set_edns(edns.clone());
    assert_eq!(udp_limit(&q), 4096);
    edns.set_max_payload(100);
    q.set_edns(edns);
    assert_eq!(udp_limit(&q), 512);
}
