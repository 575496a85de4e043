//! Fuzz target for `wireloop::codec::frame`.
//!
//! Input layout: byte 0 picks the split point, byte 1 the byte order (bit 0)
//! and the length limit (bits 1-2); the rest is the stream. The stream is
//! decoded in one shot, split in two at the chosen point, and (when short)
//! byte by byte, the way the event loop would feed it. All runs must agree,
//! `consumed` must never exceed the input, and re-encoding the decoded frames
//! must reproduce the consumed bytes exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wireloop::codec::frame::{encode_frame, ByteOrder, FrameDecoder, FrameError, DEFAULT_MAX_FRAME};

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    end: Result<(), FrameError>,
}

fn run(order: ByteOrder, max: usize, chunks: &[&[u8]]) -> Outcome {
    let mut dec = FrameDecoder::new(order, max);
    let mut buf: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&buf) {
                Err(e) => return Outcome { frames, end: Err(e) },
                Ok(None) => break,
                Ok(Some(f)) => {
                    assert!(f.consumed <= buf.len(), "consumed {} of {}", f.consumed, buf.len());
                    assert_eq!(f.consumed, 4 + f.payload.len());
                    assert!(f.payload.len() <= max);
                    frames.push(f.payload.to_vec());
                    let n = f.consumed;
                    buf.drain(..n);
                }
            }
        }
        // After Ok(None) the decoder must be waiting for at least one byte.
        assert!(dec.needed(buf.len()) > 0);
    }
    let end = dec.finish(&buf);
    assert_eq!(end.is_ok(), buf.is_empty());
    Outcome { frames, end }
}

fuzz_target!(|data: &[u8]| {
    let [split_ctl, cfg, stream @ ..] = data else {
        return;
    };
    let order = if cfg & 1 == 0 { ByteOrder::Little } else { ByteOrder::Big };
    let max = [DEFAULT_MAX_FRAME, 64, 4, 0][usize::from((cfg >> 1) & 3)];
    let split = usize::from(*split_ctl) * (stream.len() + 1) / 256;
    let (a, b) = stream.split_at(split);

    let one = run(order, max, &[stream]);
    let two = run(order, max, &[a, b]);
    assert_eq!(one, two, "split at {split}");
    if stream.len() <= 256 {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(one, run(order, max, &bytes), "byte by byte");
    }

    let mut again = Vec::new();
    for f in &one.frames {
        encode_frame(order, f, &mut again).unwrap();
    }
    assert_eq!(&again[..], &stream[..again.len()], "re-encoding differs");
});
