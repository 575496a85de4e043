//! Fuzz target for `wireloop::codec::digits` (the handshake's length).
//!
//! Byte 0 picks the maximum; the rest is the input. Every prefix of the
//! input must decode to "need more" or to the same answer as the whole, a
//! terminated length must never exceed the maximum, and `consumed` must stay
//! inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wireloop::codec::digits::{decode, finish_unterminated};

fuzz_target!(|data: &[u8]| {
    let [max_ctl, input @ ..] = data else {
        return;
    };
    let max = [16 * 1024 * 1024, 0, 9, u64::MAX][usize::from(max_ctl & 3)];
    let whole = decode(input, max);
    if let Ok(Some(len)) = &whole {
        assert!(len.len <= max);
        assert!(len.consumed <= input.len());
    }
    for cut in 0..input.len().min(32) {
        let part = decode(&input[..cut], max);
        assert!(part == Ok(None) || part == whole, "prefix {cut} gave {part:?}, whole {whole:?}");
    }
    if whole == Ok(None) {
        if let Ok(len) = finish_unterminated(input, max) {
            assert!(len.len <= max);
            assert_eq!(len.consumed, input.len());
        }
    }
});
