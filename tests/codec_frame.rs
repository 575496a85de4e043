//! Tests for `wireloop::codec::frame`: byte fixtures, every split point,
//! random chunkings, and a catalogue of malformed input.

use proptest::prelude::*;
use wireloop::codec::frame::*;

const LE: ByteOrder = ByteOrder::Little;
const BE: ByteOrder = ByteOrder::Big;

/// Everything a stream decoded to: the frames, then how it ended (the first
/// decode error, or the result of `finish` on the leftover).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    end: Result<(), FrameError>,
}

fn ok(frames: &[&[u8]]) -> Outcome {
    Outcome { frames: frames.iter().map(|f| f.to_vec()).collect(), end: Ok(()) }
}

fn err(frames: &[&[u8]], e: FrameError) -> Outcome {
    Outcome { frames: frames.iter().map(|f| f.to_vec()).collect(), end: Err(e) }
}

/// Decodes frames from the front of `buf` until `Ok(None)` or an error,
/// draining consumed bytes. Returns `Err` if the stream failed.
fn drain(dec: &mut FrameDecoder, buf: &mut Vec<u8>, frames: &mut Vec<Vec<u8>>) -> Result<(), FrameError> {
    loop {
        match dec.decode(buf)? {
            None => return Ok(()),
            Some(frame) => {
                assert_eq!(frame.consumed, 4 + frame.payload.len());
                assert!(frame.consumed <= buf.len());
                frames.push(frame.payload.to_vec());
                buf.drain(..frame.consumed);
            }
        }
    }
}

/// Simulates the event loop: append each chunk to a buffer of unconsumed
/// bytes, decode until `Ok(None)`, drain what was consumed; `finish` at EOF.
fn run_chunks<'a>(order: ByteOrder, max: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut dec = FrameDecoder::new(order, max);
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        if let Err(e) = drain(&mut dec, &mut buf, &mut frames) {
            return Outcome { frames, end: Err(e) };
        }
    }
    let end = dec.finish(&buf);
    Outcome { frames, end }
}

fn one_shot(order: ByteOrder, max: usize, input: &[u8]) -> Outcome {
    run_chunks(order, max, [input])
}

/// Splits `input` into chunks of the given sizes (cycled), the last one
/// taking whatever is left.
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

#[rustfmt::skip]
fn fixtures() -> Vec<(&'static str, ByteOrder, usize, Vec<u8>, Outcome)> {
    const M: usize = DEFAULT_MAX_FRAME;
    let big = vec![0xA5u8; 258];
    let big_le = [&[0x02, 0x01, 0, 0][..], &big].concat();
    let big_be = [&[0, 0, 0x01, 0x02][..], &big].concat();
    vec![
        ("empty stream", LE, M, vec![], ok(&[])),
        ("le abc", LE, M, b"\x03\x00\x00\x00abc".to_vec(), ok(&[b"abc"])),
        ("be abc", BE, M, b"\x00\x00\x00\x03abc".to_vec(), ok(&[b"abc"])),
        ("le empty frame", LE, M, vec![0, 0, 0, 0], ok(&[b""])),
        ("be empty frame", BE, M, vec![0, 0, 0, 0], ok(&[b""])),
        ("le 258 bytes", LE, M, big_le, ok(&[&big])),
        ("be 258 bytes", BE, M, big_be, ok(&[&big])),
        ("le many frames", LE, M,
            b"\x01\x00\x00\x00x\x00\x00\x00\x00\x02\x00\x00\x00hi\x05\x00\x00\x00hello".to_vec(),
            ok(&[b"x", b"", b"hi", b"hello"])),
        ("be many frames", BE, M,
            b"\x00\x00\x00\x01x\x00\x00\x00\x00\x00\x00\x00\x02hi\x00\x00\x00\x05hello".to_vec(),
            ok(&[b"x", b"", b"hi", b"hello"])),
        ("big-endian bytes read as little-endian", LE, M, b"\x00\x00\x00\x03abc".to_vec(),
            err(&[], FrameError::TooLong { len: 0x0300_0000, max: M })),
        ("exactly max", LE, 3, b"\x03\x00\x00\x00abc".to_vec(), ok(&[b"abc"])),
        ("max + 1", LE, 3, b"\x01\x00\x00\x00a\x04\x00\x00\x00abcd".to_vec(),
            err(&[b"a"], FrameError::TooLong { len: 4, max: 3 })),
        ("negative after a frame", LE, M, b"\x01\x00\x00\x00a\xff\xff\xff\xff".to_vec(),
            err(&[b"a"], FrameError::Negative(-1))),
        ("i32::MIN le", LE, M, vec![0, 0, 0, 0x80], err(&[], FrameError::Negative(i32::MIN))),
        ("i32::MIN be", BE, M, vec![0x80, 0, 0, 0], err(&[], FrameError::Negative(i32::MIN))),
        ("i32::MAX", LE, M, vec![0xff, 0xff, 0xff, 0x7f],
            err(&[], FrameError::TooLong { len: i32::MAX as u64, max: M })),
        ("eof mid-length", LE, M, b"\x01\x00\x00\x00a\x01\x00".to_vec(),
            err(&[b"a"], FrameError::UnexpectedEof { needed: 2, have: 2 })),
        ("eof right after the length", BE, M, b"\x00\x00\x00\x05".to_vec(),
            err(&[], FrameError::UnexpectedEof { needed: 5, have: 4 })),
        ("eof mid-payload", LE, M, b"\x00\x00\x00\x00\x05\x00\x00\x00ab".to_vec(),
            err(&[b""], FrameError::UnexpectedEof { needed: 3, have: 6 })),
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
        let got = run_chunks(order, max, input.chunks(1));
        assert_eq!(got, want, "fixture {name} byte by byte");
    }
}

#[test]
fn exact_consumed_and_borrowed_payloads() {
    let input = b"\x02\x00\x00\x00hi\x00\x00\x00\x00\x01\x00";
    let mut dec = FrameDecoder::new(LE, DEFAULT_MAX_FRAME);
    let f = dec.decode(input).unwrap().unwrap();
    assert_eq!(f, Frame { payload: b"hi", consumed: 6 });
    assert_eq!(f.payload.as_ptr(), input[4..].as_ptr(), "payload is borrowed, not copied");
    let f = dec.decode(&input[6..]).unwrap().unwrap();
    assert_eq!(f, Frame { payload: b"", consumed: 4 });
    assert_eq!(dec.decode(&input[10..]), Ok(None));
    assert_eq!(dec.finish(&input[10..]), Err(FrameError::UnexpectedEof { needed: 2, have: 2 }));
}

#[test]
fn decode_yields_only_one_frame_per_call() {
    let input = b"\x01\x00\x00\x00a\x01\x00\x00\x00b";
    let mut dec = FrameDecoder::default();
    assert_eq!(dec.decode(input), Ok(Some(Frame { payload: b"a", consumed: 5 })));
    assert_eq!(dec.decode(&input[5..]), Ok(Some(Frame { payload: b"b", consumed: 5 })));
    assert_eq!(dec.decode(&input[10..]), Ok(None));
    assert_eq!(dec.finish(&input[10..]), Ok(()));
}

#[test]
fn resume_keeps_the_prefix_in_the_leftover() {
    let mut dec = FrameDecoder::new(BE, 100);
    let mut buf = vec![0, 0, 0, 3, b'a'];
    assert_eq!(dec.decode(&buf), Ok(None));
    assert_eq!(dec.needed(buf.len()), 2);
    buf.push(b'b');
    assert_eq!(dec.decode(&buf), Ok(None));
    assert_eq!(dec.needed(buf.len()), 1);
    buf.extend_from_slice(b"c\x00");
    assert_eq!(dec.decode(&buf), Ok(Some(Frame { payload: b"abc", consumed: 7 })));
    // Back in Head: the next decode parses a fresh prefix.
    assert_eq!(dec.needed(1), 3);
    assert_eq!(dec.decode(&buf[7..]), Ok(None));
}

#[test]
fn needed_counts_to_the_next_step() {
    let mut dec = FrameDecoder::new(LE, 100);
    assert_eq!(dec.needed(0), 4);
    assert_eq!(dec.needed(3), 1);
    assert_eq!(dec.needed(4), 0, "in Head, 4 bytes let decode parse the length");
    assert_eq!(dec.decode(b"\x05\x00\x00\x00a"), Ok(None));
    assert_eq!(dec.needed(5), 4);
    assert_eq!(dec.needed(9), 0);
    assert_eq!(dec.needed(20), 0);
}

#[test]
fn two_gib_length_rejected_after_four_bytes() {
    // i32::MAX = 2 GiB - 1, the largest length the wire can declare.
    let mut dec = FrameDecoder::new(LE, DEFAULT_MAX_FRAME);
    let e = dec.decode(&[0xff, 0xff, 0xff, 0x7f]).unwrap_err();
    assert_eq!(e, FrameError::TooLong { len: 2_147_483_647, max: DEFAULT_MAX_FRAME });
    let mut dec = FrameDecoder::new(BE, DEFAULT_MAX_FRAME);
    assert_eq!(
        dec.decode(&[0x7f, 0xff, 0xff, 0xff]),
        Err(FrameError::TooLong { len: 2_147_483_647, max: DEFAULT_MAX_FRAME })
    );
    // Three bytes are not enough to judge.
    let mut dec = FrameDecoder::new(LE, DEFAULT_MAX_FRAME);
    assert_eq!(dec.decode(&[0xff, 0xff, 0xff]), Ok(None));
}

#[test]
fn two_gib_length_under_an_unlimited_max_just_waits() {
    let mut dec = FrameDecoder::new(LE, usize::MAX);
    assert_eq!(dec.decode(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3]), Ok(None));
    assert_eq!(dec.needed(7), i32::MAX as usize + 4 - 7);
    assert_eq!(
        dec.finish(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3]),
        Err(FrameError::UnexpectedEof { needed: i32::MAX as usize - 3, have: 7 })
    );
}

#[test]
#[rustfmt::skip]
fn malformed_catalogue() {
    let cases: Vec<(&str, ByteOrder, usize, Vec<u8>, FrameError)> = vec![
        ("-1", LE, 100, vec![0xff; 4], FrameError::Negative(-1)),
        ("-1 be", BE, 100, vec![0xff; 4], FrameError::Negative(-1)),
        ("-2 with payload", LE, 100, vec![0xfe, 0xff, 0xff, 0xff, 1, 2], FrameError::Negative(-2)),
        ("i32::MIN le", LE, 100, vec![0, 0, 0, 0x80], FrameError::Negative(i32::MIN)),
        ("i32::MIN be", BE, 100, vec![0x80, 0, 0, 0], FrameError::Negative(i32::MIN)),
        ("i32::MAX", LE, 100, vec![0xff, 0xff, 0xff, 0x7f], FrameError::TooLong { len: 2_147_483_647, max: 100 }),
        ("max + 1", LE, 100, vec![101, 0, 0, 0], FrameError::TooLong { len: 101, max: 100 }),
        ("max + 1 be", BE, 100, vec![0, 0, 0, 101], FrameError::TooLong { len: 101, max: 100 }),
        ("max 0", LE, 0, vec![1, 0, 0, 0, b'x'], FrameError::TooLong { len: 1, max: 0 }),
        ("default max + 1", LE, DEFAULT_MAX_FRAME, vec![1, 0, 0, 1],
            FrameError::TooLong { len: 16 * 1024 * 1024 + 1, max: DEFAULT_MAX_FRAME }),
    ];
    for (name, order, max, input, want) in cases {
        let mut dec = FrameDecoder::new(order, max);
        assert_eq!(dec.decode(&input), Err(want.clone()), "case {name}");
        // The decoder does not move on an error: same bytes, same error.
        assert_eq!(dec.decode(&input), Err(want.clone()), "case {name} again");
        // finish on the undecoded leftover reports the same violation.
        assert_eq!(FrameDecoder::new(order, max).finish(&input), Err(want), "case {name} finish");
    }
}

#[test]
fn default_max_is_accepted() {
    let mut dec = FrameDecoder::default();
    assert_eq!(dec.decode(&[0, 0, 0, 1]), Ok(None));
    assert_eq!(dec.needed(4), 16 * 1024 * 1024);
}

#[test]
#[rustfmt::skip]
fn eof_catalogue() {
    let cases: Vec<(&str, Vec<u8>, Result<(), FrameError>)> = vec![
        ("nothing left", vec![], Ok(())),
        ("1 byte of length", vec![7], Err(FrameError::UnexpectedEof { needed: 3, have: 1 })),
        ("3 bytes of length", vec![7, 0, 0], Err(FrameError::UnexpectedEof { needed: 1, have: 3 })),
        ("length only", vec![7, 0, 0, 0], Err(FrameError::UnexpectedEof { needed: 7, have: 4 })),
        ("mid payload", vec![7, 0, 0, 0, 1, 2, 3, 4, 5, 6], Err(FrameError::UnexpectedEof { needed: 1, have: 10 })),
    ];
    for (name, rest, want) in cases {
        let mut dec = FrameDecoder::new(LE, 100);
        assert_eq!(dec.decode(&rest), Ok(None), "case {name}");
        assert_eq!(dec.finish(&rest), want, "case {name}");
    }
}

#[test]
fn encode_exact_bytes() {
    let mut out = Vec::new();
    encode_frame(LE, b"abc", &mut out).unwrap();
    assert_eq!(out, b"\x03\x00\x00\x00abc");
    encode_frame(BE, b"", &mut out).unwrap();
    assert_eq!(out, b"\x03\x00\x00\x00abc\x00\x00\x00\x00", "appends");
    let mut out = Vec::new();
    encode_frame(BE, &[9; 258], &mut out).unwrap();
    assert_eq!(&out[..4], &[0, 0, 1, 2]);
    assert_eq!(out.len(), 262);
}

#[test]
fn encode_rejects_payloads_over_i32_max() {
    // calloc'd and never touched: costs address space, not memory.
    let huge = vec![0u8; i32::MAX as usize + 1];
    let mut out = vec![1, 2];
    assert_eq!(encode_frame(LE, &huge, &mut out), Err(FrameError::PayloadTooLarge(1 << 31)));
    assert_eq!(out, [1, 2], "output untouched on error");
}

#[test]
fn byte_order_default_is_little() {
    assert_eq!(ByteOrder::default(), ByteOrder::Little);
    let dec = FrameDecoder::default();
    assert_eq!((dec.order(), dec.max_len()), (LE, DEFAULT_MAX_FRAME));
}

#[test]
#[rustfmt::skip]
fn error_messages() {
    let cases = [
        (FrameError::Negative(-1), "frame length prefix is negative (-1)"),
        (FrameError::TooLong { len: 5, max: 4 }, "frame length 5 exceeds the maximum of 4 bytes"),
        (FrameError::UnexpectedEof { needed: 3, have: 6 },
            "stream ended in the middle of a frame: 6 bytes of it arrived, 3 more were needed"),
        (FrameError::PayloadTooLarge(2_147_483_648),
            "payload of 2147483648 bytes is too large for a frame (at most 2147483647 bytes)"),
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

proptest! {
    #[test]
    fn random_frames_random_chunks(
        order in order_strategy(),
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20),
        sizes in prop::collection::vec(1usize..64, 1..16),
    ) {
        let mut wire = Vec::new();
        for p in &payloads {
            encode_frame(order, p, &mut wire).unwrap();
        }
        let want = Outcome { frames: payloads.clone(), end: Ok(()) };
        prop_assert_eq!(&one_shot(order, 1024, &wire), &want);
        prop_assert_eq!(run_chunks(order, 1024, chunked(&wire, &sizes)), want);
    }

    #[test]
    fn arbitrary_bytes_chunking_does_not_matter(
        order in order_strategy(),
        max in 0usize..40,
        input in prop::collection::vec(prop_oneof![3 => 0u8..8, 1 => any::<u8>()], 0..200),
        sizes in prop::collection::vec(1usize..16, 1..8),
    ) {
        let want = one_shot(order, max, &input);
        prop_assert_eq!(run_chunks(order, max, chunked(&input, &sizes)), want);
    }

    #[test]
    fn corrupted_stream_chunking_does_not_matter(
        order in order_strategy(),
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..50), 1..8),
        flip in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        cut in any::<prop::sample::Index>(),
        sizes in prop::collection::vec(1usize..32, 1..8),
    ) {
        let mut wire = Vec::new();
        for p in &payloads {
            encode_frame(order, p, &mut wire).unwrap();
        }
        let i = flip.index(wire.len());
        wire[i] ^= xor;
        wire.truncate(cut.index(wire.len() + 1));
        let want = one_shot(order, 64, &wire);
        prop_assert_eq!(run_chunks(order, 64, chunked(&wire, &sizes)), want);
    }
}
