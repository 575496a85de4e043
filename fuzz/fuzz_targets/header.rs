//! Fuzz target for `wireloop::codec::header`.
//!
//! Input layout: byte 0 picks the split point, byte 1 the byte order (bit 0)
//! and the header limit (bits 1-2); the rest is the stream. The body length
//! comes from the header's `body_len` (0 if absent), like a service would
//! derive it. The stream is decoded in one shot, split in two at the chosen
//! point, and (when short) byte by byte. All runs must agree once body chunks
//! are merged, `consumed` must never exceed the input, body chunks must be
//! non-empty and within the announced length, and `BodyEnd` must consume 0.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wireloop::codec::frame::ByteOrder;
use wireloop::codec::header::{HeaderDecoder, HeaderError, Item, DEFAULT_MAX_HEADER};

#[derive(Debug, PartialEq)]
enum Ev {
    /// Always an `Item::Header`; kept as an item to avoid naming the map type.
    Header(Item<'static>),
    Body(Vec<u8>),
    End,
}

#[derive(Debug, PartialEq)]
struct Outcome {
    events: Vec<Ev>,
    end: Result<(), HeaderError>,
}

fn run(order: ByteOrder, max: usize, chunks: &[&[u8]]) -> Outcome {
    let mut dec = HeaderDecoder::new(order, max);
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        // Each item consumes bytes, except BodyEnd, which ends a message.
        let limit = 2 * buf.len() + 8;
        let mut steps = 0usize;
        loop {
            steps += 1;
            assert!(steps <= limit, "no progress");
            let before = dec.body_remaining();
            let d = match dec.decode(&buf) {
                Err(e) => return Outcome { events, end: Err(e) },
                Ok(None) => break,
                Ok(Some(d)) => d,
            };
            assert!(d.consumed <= buf.len(), "consumed {} of {}", d.consumed, buf.len());
            match d.item {
                Item::Header(map) => {
                    assert!(d.consumed > 4 && d.consumed - 4 <= max);
                    let len = map.get("body_len").and_then(|v| v.as_u64()).unwrap_or(0);
                    dec.begin_body(len);
                    events.push(Ev::Header(Item::Header(map)));
                }
                Item::Body(chunk) => {
                    let before = before.expect("body chunk outside a body");
                    assert!(!chunk.is_empty() && chunk.len() as u64 <= before);
                    assert_eq!(d.consumed, chunk.len());
                    match events.last_mut() {
                        Some(Ev::Body(b)) => b.extend_from_slice(chunk),
                        _ => events.push(Ev::Body(chunk.to_vec())),
                    }
                }
                Item::BodyEnd => {
                    assert_eq!((d.consumed, before), (0, Some(0)));
                    events.push(Ev::End);
                }
            }
            let n = d.consumed;
            buf.drain(..n);
        }
    }
    let end = dec.finish(&buf);
    Outcome { events, end }
}

fuzz_target!(|data: &[u8]| {
    let [split_ctl, cfg, stream @ ..] = data else {
        return;
    };
    let order = if cfg & 1 == 0 { ByteOrder::Little } else { ByteOrder::Big };
    let max = [DEFAULT_MAX_HEADER, 64, 8, 1][usize::from((cfg >> 1) & 3)];
    let split = usize::from(*split_ctl) * (stream.len() + 1) / 256;
    let (a, b) = stream.split_at(split);

    let one = run(order, max, &[stream]);
    let two = run(order, max, &[a, b]);
    assert_eq!(one, two, "split at {split}");
    if stream.len() <= 256 {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(one, run(order, max, &bytes), "byte by byte");
    }
});
