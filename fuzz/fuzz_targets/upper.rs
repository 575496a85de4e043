//! Fuzz target for `wireloop::codec::upper`.
//!
//! Byte 0 picks a split point; the rest is the stream. Uppercasing it in one
//! shot and in two reads (carrying the leftover, as the loop does) must give
//! the same output, the leftover must stay under 4 bytes, and everything must
//! be consumed at EOF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wireloop::codec::upper::upper_into;

fuzz_target!(|data: &[u8]| {
    let [split_ctl, stream @ ..] = data else {
        return;
    };
    let split = usize::from(*split_ctl) * (stream.len() + 1) / 256;
    let mut whole = Vec::new();
    assert_eq!(upper_into(stream, true, &mut whole), stream.len());

    let mut out = Vec::new();
    let mut pending = stream[..split].to_vec();
    let used = upper_into(&pending, false, &mut out);
    assert!(pending.len() - used < 4);
    pending.drain(..used);
    pending.extend_from_slice(&stream[split..]);
    assert_eq!(upper_into(&pending, true, &mut out), pending.len());
    assert_eq!(out, whole, "split at {split}");
    if let Ok(s) = std::str::from_utf8(stream) {
        assert_eq!(whole, s.to_uppercase().into_bytes());
    }
});
