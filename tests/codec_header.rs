//! Tests for `wireloop::codec::header`: byte fixtures, every split point,
//! random chunkings, and a catalogue of malformed input.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use wireloop::codec::frame::ByteOrder;
use wireloop::codec::header::*;

const LE: ByteOrder = ByteOrder::Little;
const BE: ByteOrder = ByteOrder::Big;
const M: usize = DEFAULT_MAX_HEADER;

/// One decoded event. Consecutive body chunks are merged, since how a body is
/// chunked depends on how the bytes arrived.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Header(Value),
    Body(Vec<u8>),
    End,
}

#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    events: Vec<Ev>,
    end: Result<(), HeaderError>,
}

fn outcome(events: Vec<Ev>, end: Result<(), HeaderError>) -> Outcome {
    Outcome { events, end }
}

fn hdr(v: Value) -> Ev {
    Ev::Header(v)
}

fn body(b: &[u8]) -> Ev {
    Ev::Body(b.to_vec())
}

/// The "service": the body length is the header's `body_len` (0 if absent).
fn body_len_of(map: &Map<String, Value>) -> u64 {
    map.get("body_len").and_then(Value::as_u64).unwrap_or(0)
}

/// Decodes until `Ok(None)` or an error, draining consumed bytes and checking
/// the per-item contract along the way.
fn drain(dec: &mut HeaderDecoder, buf: &mut Vec<u8>, events: &mut Vec<Ev>) -> Result<(), HeaderError> {
    // Every item either consumes bytes or changes state (BodyEnd), so the loop
    // is bounded; a decoder that stops making progress fails here.
    for _ in 0..2 * buf.len() + 8 {
        let remaining_before = dec.body_remaining();
        let Some(d) = dec.decode(buf)? else {
            return Ok(());
        };
        assert!(d.consumed <= buf.len(), "consumed {} of {}", d.consumed, buf.len());
        match d.item {
            Item::Header(map) => {
                assert!(d.consumed > 4);
                assert!(!dec.in_body());
                dec.begin_body(body_len_of(&map));
                events.push(Ev::Header(Value::Object(map)));
            }
            Item::Body(chunk) => {
                assert!(!chunk.is_empty());
                assert_eq!(d.consumed, chunk.len());
                let before = remaining_before.expect("body outside of a body");
                assert_eq!(dec.body_remaining(), Some(before - chunk.len() as u64));
                match events.last_mut() {
                    Some(Ev::Body(b)) => b.extend_from_slice(chunk),
                    _ => events.push(Ev::Body(chunk.to_vec())),
                }
            }
            Item::BodyEnd => {
                assert_eq!(d.consumed, 0);
                assert_eq!(remaining_before, Some(0));
                assert!(!dec.in_body());
                events.push(Ev::End);
            }
        }
        buf.drain(..d.consumed);
    }
    panic!("decoder made no progress");
}

/// Simulates the event loop over a sequence of reads; `finish` at EOF.
fn run_chunks<'a>(order: ByteOrder, max: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut dec = HeaderDecoder::new(order, max);
    let mut buf = Vec::new();
    let mut events = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        if let Err(e) = drain(&mut dec, &mut buf, &mut events) {
            return outcome(events, Err(e));
        }
    }
    let end = dec.finish(&buf);
    outcome(events, end)
}

fn one_shot(order: ByteOrder, max: usize, input: &[u8]) -> Outcome {
    run_chunks(order, max, [input])
}

fn chunked<'a>(input: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    out
}

/// Builds one message from header text and body (for longer fixtures; the
/// short ones below are spelled out byte by byte).
fn msg(order: ByteOrder, header: &str, body: &[u8]) -> Vec<u8> {
    let n = header.len() as i32;
    let mut v = match order {
        ByteOrder::Little => n.to_le_bytes().to_vec(),
        ByteOrder::Big => n.to_be_bytes().to_vec(),
    };
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(body);
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn json_err(text: &str) -> HeaderError {
    HeaderError::InvalidJson(serde_json::from_str::<Value>(text).unwrap_err().to_string())
}

fn got(item: Item<'_>, consumed: usize) -> Result<Option<Decoded<'_>>, HeaderError> {
    Ok(Some(Decoded { item, consumed }))
}

fn eof(part: EofPart, needed: u64, have: usize) -> HeaderError {
    HeaderError::UnexpectedEof { part, needed, have }
}

#[rustfmt::skip]
fn fixtures() -> Vec<(&'static str, ByteOrder, usize, Vec<u8>, Outcome)> {
    let long_body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let long_hdr = format!("{{\"body_len\":1000,\"pad\":\"{}\"}}", "p".repeat(300));
    let fancy = " {\"name\": \"caf\u{e9} \u{1f980}\", \"o\": {\"a\": [1, null, true]}, \"body_len\": 2}\n";
    let end = Ev::End;
    vec![
        ("empty stream", LE, M, vec![], outcome(vec![], Ok(()))),
        ("le header + body", LE, M, b"\x0e\x00\x00\x00{\"body_len\":3}abc".to_vec(),
            outcome(vec![hdr(json!({"body_len": 3})), body(b"abc"), end.clone()], Ok(()))),
        ("be header + body", BE, M, b"\x00\x00\x00\x0e{\"body_len\":3}abc".to_vec(),
            outcome(vec![hdr(json!({"body_len": 3})), body(b"abc"), end.clone()], Ok(()))),
        ("empty object, empty body", LE, M, b"\x02\x00\x00\x00{}".to_vec(),
            outcome(vec![hdr(json!({})), end.clone()], Ok(()))),
        ("explicit zero body", BE, M, b"\x00\x00\x00\x0e{\"body_len\":0}".to_vec(),
            outcome(vec![hdr(json!({"body_len": 0})), end.clone()], Ok(()))),
        ("whitespace, unicode, nesting", LE, M, msg(LE, fancy, b"\x00\xff"),
            outcome(vec![
                hdr(json!({"name": "caf\u{e9} \u{1f980}", "o": {"a": [1, null, true]}, "body_len": 2})),
                body(b"\x00\xff"), end.clone(),
            ], Ok(()))),
        ("many messages in one buffer", LE, M,
            cat(&[
                msg(LE, "{\"cmd\":\"ls\",\"body_len\":4}", b"a\nb\n"),
                msg(LE, "{}", b""),
                msg(LE, &long_hdr, &long_body),
                msg(LE, "{\"body_len\":1}", b"{"),
            ]),
            outcome(vec![
                hdr(json!({"cmd": "ls", "body_len": 4})), body(b"a\nb\n"), end.clone(),
                hdr(json!({})), end.clone(),
                hdr(serde_json::from_str(&long_hdr).unwrap()), body(&long_body), end.clone(),
                hdr(json!({"body_len": 1})), body(b"{"), end.clone(),
            ], Ok(()))),
        ("many messages, big-endian", BE, M,
            cat(&[msg(BE, "{\"body_len\":2}", b"hi"), msg(BE, "{\"x\":1}", b"")]),
            outcome(vec![hdr(json!({"body_len": 2})), body(b"hi"), end.clone(), hdr(json!({"x": 1})), end.clone()], Ok(()))),
        ("big-endian bytes read as little-endian", LE, M, b"\x00\x00\x00\x02{}".to_vec(),
            outcome(vec![], Err(HeaderError::TooLong { len: 0x0200_0000, max: M }))),
        ("header exactly max", LE, 7, b"\x07\x00\x00\x00{\"a\":1}".to_vec(),
            outcome(vec![hdr(json!({"a": 1})), end.clone()], Ok(()))),
        ("error after a good message", LE, M, b"\x02\x00\x00\x00{}\x02\x00\x00\x00[]".to_vec(),
            outcome(vec![hdr(json!({})), end.clone()], Err(HeaderError::NotAnObject))),
        ("eof mid-length", LE, M, b"\x02\x00\x00\x00{}\x02\x00".to_vec(),
            outcome(vec![hdr(json!({})), end.clone()], Err(eof(EofPart::Length, 2, 2)))),
        ("eof mid-header", BE, M, b"\x00\x00\x00\x10{\"body_len".to_vec(),
            outcome(vec![], Err(eof(EofPart::Header, 6, 14)))),
        ("eof mid-body", LE, M, b"\x0e\x00\x00\x00{\"body_len\":9}abcd".to_vec(),
            outcome(vec![hdr(json!({"body_len": 9})), body(b"abcd")], Err(eof(EofPart::Body, 5, 0)))),
    ]
}

#[test]
fn fixtures_one_shot() {
    for (name, order, max, input, want) in fixtures() {
        assert_eq!(one_shot(order, max, &input), want, "fixture {name}");
    }
}

#[test]
fn fixtures_split_at_every_offset() {
    for (name, order, max, input, want) in fixtures() {
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(run_chunks(order, max, [a, b]), want, "fixture {name} split at {at}");
        }
    }
}

#[test]
fn fixtures_byte_at_a_time() {
    for (name, order, max, input, want) in fixtures() {
        assert_eq!(run_chunks(order, max, input.chunks(1)), want, "fixture {name} byte by byte");
    }
}

#[test]
fn exact_items_and_consumed() {
    let input = b"\x0e\x00\x00\x00{\"body_len\":3}abc\x02\x00\x00\x00{}";
    let mut dec = HeaderDecoder::new(LE, M);
    assert!(!dec.in_body());
    assert_eq!(dec.body_remaining(), None);
    let d = dec.decode(input).unwrap().unwrap();
    let Item::Header(map) = &d.item else { panic!("want a header, got {d:?}") };
    assert_eq!(Value::Object(map.clone()), json!({"body_len": 3}));
    assert_eq!(d.consumed, 18);
    assert!(!dec.in_body());
    dec.begin_body(3);
    assert!(dec.in_body());
    assert_eq!(dec.body_remaining(), Some(3));
    // The chunk is min(available, remaining): the next header is not eaten.
    let d = dec.decode(&input[18..]).unwrap().unwrap();
    assert_eq!(Ok(Some(d)), got(Item::Body(b"abc"), 3));
    assert_eq!(dec.body_remaining(), Some(0));
    assert!(dec.in_body());
    assert_eq!(dec.finish(b""), Ok(()), "body complete, only BodyEnd pending");
    let d = dec.decode(&input[21..]).unwrap().unwrap();
    assert_eq!(Ok(Some(d)), got(Item::BodyEnd, 0));
    assert!(!dec.in_body());
    assert_eq!(dec.body_remaining(), None);
    let d = dec.decode(&input[21..]).unwrap().unwrap();
    assert_eq!(d.consumed, 6);
    assert_eq!(d.item, Item::Header(Map::new()));
}

#[test]
fn empty_body_yields_body_end_at_once_on_empty_input() {
    let mut dec = HeaderDecoder::default();
    assert_eq!(dec.decode(b"\x02\x00\x00\x00{}"), got(Item::Header(Map::new()), 6));
    dec.begin_body(0);
    assert_eq!(dec.body_remaining(), Some(0));
    assert_eq!(dec.decode(b""), got(Item::BodyEnd, 0));
    assert_eq!(dec.decode(b""), Ok(None), "BodyEnd is yielded once");
    assert_eq!(dec.finish(b""), Ok(()));
}

#[test]
fn body_is_streamed_in_arriving_chunks() {
    let mut dec = HeaderDecoder::new(BE, M);
    assert!(dec.decode(b"\x00\x00\x00\x02{}").unwrap().is_some());
    dec.begin_body(10);
    assert_eq!(dec.decode(b""), Ok(None));
    assert_eq!(dec.decode(b"abcd"), got(Item::Body(b"abcd"), 4));
    assert_eq!(dec.body_remaining(), Some(6));
    assert_eq!(dec.finish(b""), Err(eof(EofPart::Body, 6, 0)));
    assert_eq!(dec.decode(b"efghijXY"), got(Item::Body(b"efghij"), 6));
    assert_eq!(dec.decode(b"XY"), got(Item::BodyEnd, 0));
    assert_eq!(dec.decode(b"XY"), Ok(None));
    assert_eq!(dec.finish(b"XY"), Err(eof(EofPart::Length, 2, 2)));
}

#[test]
fn huge_body_length_is_just_a_counter() {
    let mut dec = HeaderDecoder::new(LE, M);
    assert!(dec.decode(b"\x02\x00\x00\x00{}").unwrap().is_some());
    dec.begin_body(u64::MAX);
    let chunk = [7u8; 4096];
    assert_eq!(dec.decode(&chunk).unwrap().unwrap().consumed, 4096);
    assert_eq!(dec.body_remaining(), Some(u64::MAX - 4096));
    assert_eq!(dec.finish(b""), Err(eof(EofPart::Body, u64::MAX - 4096, 0)));
}

#[test]
fn length_is_validated_before_any_header_byte() {
    let mut dec = HeaderDecoder::new(LE, 8);
    assert_eq!(dec.decode(b"\x09\x00\x00"), Ok(None));
    assert_eq!(dec.decode(b"\x09\x00\x00\x00"), Err(HeaderError::TooLong { len: 9, max: 8 }));
    let mut dec = HeaderDecoder::new(LE, 8);
    assert_eq!(dec.decode(b"\x00\x00\x00\x00"), Err(HeaderError::Empty));
    let mut dec = HeaderDecoder::new(BE, 8);
    assert_eq!(dec.decode(b"\xff\xff\xff\xfe"), Err(HeaderError::Negative(-2)));
}

#[test]
fn two_gib_header_rejected_after_four_bytes() {
    let mut dec = HeaderDecoder::new(LE, M);
    assert_eq!(dec.decode(&[0xff, 0xff, 0xff, 0x7f]), Err(HeaderError::TooLong { len: 2_147_483_647, max: M }));
    let mut dec = HeaderDecoder::new(BE, M);
    assert_eq!(dec.decode(&[0x7f, 0xff, 0xff, 0xff]), Err(HeaderError::TooLong { len: 2_147_483_647, max: M }));
    // With no limit it is accepted as a length and simply awaited.
    let mut dec = HeaderDecoder::new(LE, usize::MAX);
    assert_eq!(dec.decode(&[0xff, 0xff, 0xff, 0x7f, b'{']), Ok(None));
    assert_eq!(dec.finish(&[0xff, 0xff, 0xff, 0x7f, b'{']), Err(eof(EofPart::Header, i32::MAX as u64 - 1, 5)));
}

#[test]
#[rustfmt::skip]
fn malformed_catalogue() {
    let cases: Vec<(&str, ByteOrder, usize, Vec<u8>, HeaderError)> = vec![
        ("-1", LE, M, vec![0xff; 4], HeaderError::Negative(-1)),
        ("-1 be", BE, M, vec![0xff; 4], HeaderError::Negative(-1)),
        ("i32::MIN le", LE, M, vec![0, 0, 0, 0x80], HeaderError::Negative(i32::MIN)),
        ("i32::MIN be", BE, M, vec![0x80, 0, 0, 0], HeaderError::Negative(i32::MIN)),
        ("i32::MAX", LE, M, vec![0xff, 0xff, 0xff, 0x7f], HeaderError::TooLong { len: 2_147_483_647, max: M }),
        ("default max + 1", LE, M, vec![0x01, 0x00, 0x01, 0x00], HeaderError::TooLong { len: 65537, max: M }),
        ("max + 1", BE, 8, b"\x00\x00\x00\x09{\"ab\":12}".to_vec(), HeaderError::TooLong { len: 9, max: 8 }),
        ("header length 0", LE, M, vec![0, 0, 0, 0], HeaderError::Empty),
        ("header length 0 be", BE, M, vec![0, 0, 0, 0, b'{', b'}'], HeaderError::Empty),
        ("invalid utf-8", LE, M, b"\x02\x00\x00\x00\xff\xfe".to_vec(), HeaderError::InvalidUtf8),
        ("cut utf-8 sequence", LE, M, b"\x04\x00\x00\x00\"\xc3\"}".to_vec(), HeaderError::InvalidUtf8),
        ("utf-16 surrogate", LE, M, b"\x05\x00\x00\x00\"\xed\xa0\x80\"".to_vec(), HeaderError::InvalidUtf8),
        ("truncated json", LE, M, msg(LE, "{\"a\":", b""), json_err("{\"a\":")),
        ("bare word", LE, M, msg(LE, "hello", b""), json_err("hello")),
        ("trailing garbage", LE, M, msg(LE, "{}x", b""), json_err("{}x")),
        ("two objects", BE, M, msg(BE, "{}{}", b""), json_err("{}{}")),
        ("single quotes", LE, M, msg(LE, "{'a':1}", b""), json_err("{'a':1}")),
        ("whitespace only", LE, M, msg(LE, "  ", b""), json_err("  ")),
        ("array", LE, M, msg(LE, "[1,2]", b""), HeaderError::NotAnObject),
        ("number", LE, M, msg(LE, "42", b""), HeaderError::NotAnObject),
        ("string", LE, M, msg(LE, "\"{}\"", b""), HeaderError::NotAnObject),
        ("null", BE, M, msg(BE, "null", b""), HeaderError::NotAnObject),
        ("bool", LE, M, msg(LE, "true", b""), HeaderError::NotAnObject),
    ];
    for (name, order, max, input, want) in cases {
        let mut dec = HeaderDecoder::new(order, max);
        assert_eq!(dec.decode(&input), Err(want.clone()), "case {name}");
        assert_eq!(dec.decode(&input), Err(want.clone()), "case {name} again");
        assert!(!dec.in_body(), "case {name}");
    }
}

#[test]
#[rustfmt::skip]
fn eof_catalogue() {
    let cases: Vec<(&str, Vec<u8>, Result<(), HeaderError>)> = vec![
        ("nothing left", vec![], Ok(())),
        ("1 byte of length", vec![5], Err(eof(EofPart::Length, 3, 1))),
        ("3 bytes of length", vec![5, 0, 0], Err(eof(EofPart::Length, 1, 3))),
        ("length only", vec![5, 0, 0, 0], Err(eof(EofPart::Header, 5, 4))),
        ("mid header", b"\x05\x00\x00\x00{\"a\"".to_vec(), Err(eof(EofPart::Header, 1, 8))),
    ];
    for (name, rest, want) in cases {
        let mut dec = HeaderDecoder::new(LE, 100);
        assert_eq!(dec.decode(&rest), Ok(None), "case {name}");
        assert_eq!(dec.finish(&rest), want, "case {name}");
    }
    // finish on an undecoded leftover still judges the length prefix.
    let dec = HeaderDecoder::new(LE, 100);
    assert_eq!(dec.finish(&[0, 0, 0, 0]), Err(HeaderError::Empty));
    assert_eq!(dec.finish(&[0xff; 4]), Err(HeaderError::Negative(-1)));
    assert_eq!(dec.finish(&[101, 0, 0, 0]), Err(HeaderError::TooLong { len: 101, max: 100 }));
}

#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "decode called before begin_body"))]
fn decode_without_begin_body_is_a_caller_bug() {
    let mut dec = HeaderDecoder::default();
    assert!(dec.decode(b"\x02\x00\x00\x00{}").unwrap().is_some());
    // Release builds: a clear error instead of a panic.
    assert_eq!(dec.decode(b"abc"), Err(HeaderError::MissingBodyLen));
}

#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "finish called before begin_body"))]
fn finish_without_begin_body_is_a_caller_bug() {
    let mut dec = HeaderDecoder::default();
    assert!(dec.decode(b"\x02\x00\x00\x00{}").unwrap().is_some());
    assert_eq!(dec.finish(b""), Err(HeaderError::MissingBodyLen));
}

#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "begin_body called in state Len"))]
fn begin_body_without_header_is_a_caller_bug() {
    let mut dec = HeaderDecoder::default();
    dec.begin_body(5);
    // Release builds: ignored.
    assert!(!dec.in_body());
    assert_eq!(dec.decode(b"\x02\x00\x00\x00{}").unwrap().unwrap().consumed, 6);
}

#[test]
fn encode_exact_bytes() {
    let mut out = Vec::new();
    encode_header(LE, &json!({"a": 1}), &mut out).unwrap();
    assert_eq!(out, b"\x07\x00\x00\x00{\"a\":1}");
    encode_header(BE, &json!({}), &mut out).unwrap();
    assert_eq!(out, b"\x07\x00\x00\x00{\"a\":1}\x00\x00\x00\x02{}", "appends");
    let mut out = Vec::new();
    let pad = "z".repeat(250);
    encode_header(BE, &json!({ "p": pad }), &mut out).unwrap();
    assert_eq!(&out[..4], &[0, 0, 1, 2], "258-byte header");
    assert_eq!(out.len(), 262);
}

#[test]
fn encode_rejects_non_objects() {
    for v in [json!([1]), json!(1), json!("s"), json!(null), json!(false)] {
        let mut out = vec![9];
        assert_eq!(encode_header(LE, &v, &mut out), Err(HeaderError::NotAnObject), "{v}");
        assert_eq!(out, [9], "output untouched on error");
    }
}

#[test]
#[rustfmt::skip]
fn error_messages() {
    let cases = [
        (HeaderError::Negative(-1), "header length prefix is negative (-1)"),
        (HeaderError::Empty, "header length prefix is 0; a header cannot be empty"),
        (HeaderError::TooLong { len: 9, max: 8 }, "header length 9 exceeds the maximum of 8 bytes"),
        (HeaderError::InvalidUtf8, "header is not valid UTF-8"),
        (HeaderError::InvalidJson("oops".into()), "header is not valid JSON: oops"),
        (HeaderError::NotAnObject, "header is valid JSON but not a JSON object"),
        (eof(EofPart::Length, 2, 2),
            "stream ended in the middle of a message's length prefix: 2 bytes left over, 2 more were needed"),
        (eof(EofPart::Header, 1, 8),
            "stream ended in the middle of a message's JSON header: 8 bytes left over, 1 more were needed"),
        (eof(EofPart::Body, 5, 0),
            "stream ended in the middle of a message's body: 0 bytes left over, 5 more were needed"),
        (HeaderError::PayloadTooLarge(2_147_483_648),
            "header of 2147483648 bytes is too large to encode (at most 2147483647 bytes)"),
        (HeaderError::MissingBodyLen,
            "a header was decoded but begin_body was not called before decoding on"),
    ];
    for (e, want) in cases {
        assert_eq!(e.to_string(), want);
        let dyn_err: &dyn std::error::Error = &e;
        assert!(dyn_err.source().is_none());
    }
}

fn order_strategy() -> impl Strategy<Value = ByteOrder> {
    prop_oneof![Just(LE), Just(BE)]
}

fn header_strategy() -> impl Strategy<Value = Map<String, Value>> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(Value::Null),
    ];
    prop::collection::btree_map("[a-z\u{e9}\u{1f980}]{1,6}", leaf, 0..5).prop_map(|m| m.into_iter().collect())
}

proptest! {
    #[test]
    fn random_messages_random_chunks(
        order in order_strategy(),
        msgs in prop::collection::vec((header_strategy(), prop::collection::vec(any::<u8>(), 0..200)), 0..10),
        sizes in prop::collection::vec(1usize..64, 1..16),
    ) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for (mut map, b) in msgs {
            map.insert("body_len".into(), Value::from(b.len()));
            let v = Value::Object(map);
            encode_header(order, &v, &mut wire).unwrap();
            wire.extend_from_slice(&b);
            want.push(Ev::Header(v));
            if !b.is_empty() {
                want.push(Ev::Body(b));
            }
            want.push(Ev::End);
        }
        let want = outcome(want, Ok(()));
        prop_assert_eq!(&one_shot(order, M, &wire), &want);
        prop_assert_eq!(run_chunks(order, M, chunked(&wire, &sizes)), want);
    }

    #[test]
    fn arbitrary_bytes_chunking_does_not_matter(
        order in order_strategy(),
        max in 0usize..40,
        input in prop::collection::vec(prop_oneof![2 => 0u8..8, 2 => prop::sample::select(b"{}[]\":,1 ab".to_vec()), 1 => any::<u8>()], 0..200),
        sizes in prop::collection::vec(1usize..16, 1..8),
    ) {
        let want = one_shot(order, max, &input);
        prop_assert_eq!(run_chunks(order, max, chunked(&input, &sizes)), want);
    }

    #[test]
    fn corrupted_stream_chunking_does_not_matter(
        order in order_strategy(),
        msgs in prop::collection::vec((header_strategy(), prop::collection::vec(any::<u8>(), 0..40)), 1..6),
        flip in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        cut in any::<prop::sample::Index>(),
        sizes in prop::collection::vec(1usize..32, 1..8),
    ) {
        let mut wire = Vec::new();
        for (mut map, b) in msgs {
            map.insert("body_len".into(), Value::from(b.len()));
            encode_header(order, &Value::Object(map), &mut wire).unwrap();
            wire.extend_from_slice(&b);
        }
        let i = flip.index(wire.len());
        wire[i] ^= xor;
        wire.truncate(cut.index(wire.len() + 1));
        let want = one_shot(order, 256, &wire);
        prop_assert_eq!(run_chunks(order, 256, chunked(&wire, &sizes)), want);
    }
}
