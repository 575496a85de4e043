//! The echo and handshake codecs under random chunkings (proptest): the
//! output never depends on where reads happen to cut the input.

use proptest::prelude::*;
use wireloop::codec::digits::{self, DigitsError, Length};
use wireloop::codec::upper::upper_into;

/// Feeds `input` in the given chunk sizes, carrying leftovers like the loop does.
fn upper_chunked(input: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < input.len() {
        let n = sizes[i % sizes.len()].max(1).min(input.len() - pos);
        i += 1;
        pending.extend_from_slice(&input[pos..pos + n]);
        pos += n;
        let used = upper_into(&pending, false, &mut out);
        assert!(pending.len() - used < 4, "leftover must stay under 4 bytes");
        pending.drain(..used);
    }
    let used = upper_into(&pending, true, &mut out);
    assert_eq!(used, pending.len());
    out
}

fn upper_whole(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    upper_into(input, true, &mut out);
    out
}

proptest! {
    #[test]
    fn upper_is_independent_of_chunking(
        input in proptest::collection::vec(any::<u8>(), 0..300),
        sizes in proptest::collection::vec(1usize..8, 1..10),
    ) {
        prop_assert_eq!(upper_chunked(&input, &sizes), upper_whole(&input));
    }

    #[test]
    fn upper_of_valid_text_matches_std(s in "\\PC{0,80}", sizes in proptest::collection::vec(1usize..6, 1..6)) {
        prop_assert_eq!(upper_chunked(s.as_bytes(), &sizes), s.to_uppercase().into_bytes());
    }

    #[test]
    fn upper_passes_bytes_that_are_never_utf8_through_unchanged(
        input in proptest::collection::vec(prop_oneof![0x80u8..=0xbf, 0xf8u8..=0xff], 0..64),
        sizes in proptest::collection::vec(1usize..5, 1..5),
    ) {
        // Lone continuation bytes and 0xf8..=0xff can never start or continue
        // a valid sequence here: each must come back exactly, nothing dropped.
        prop_assert_eq!(upper_chunked(&input, &sizes), input);
    }

    #[test]
    fn digits_prefix_is_none_or_the_final_answer(n in 0u64..100_000_000, cut in 0usize..12) {
        let line = format!("{n}\n");
        let max = 16 * 1024 * 1024;
        let whole = digits::decode(line.as_bytes(), max);
        let expect = if n <= max {
            Ok(Some(Length { len: n, consumed: line.len() }))
        } else {
            Err(DigitsError::TooLong { max })
        };
        prop_assert_eq!(&whole, &expect);
        let cut = cut.min(line.len());
        let part = digits::decode(&line.as_bytes()[..cut], max);
        prop_assert!(part == Ok(None) || part == whole, "prefix gave {:?}", part);
    }
}

/// Malformed inputs for the handshake length, each with its exact error.
#[test]
fn digits_malformed_catalogue() {
    let max = 1000;
    let cases: &[(&[u8], DigitsError)] = &[
        (b"\n", DigitsError::Empty),
        (b"\r\n", DigitsError::Empty),
        (b" 5\n", DigitsError::NotADigit(b' ')),
        (b"5 \n", DigitsError::NotADigit(b' ')),
        (b"+5\n", DigitsError::NotADigit(b'+')),
        (b"0x10\n", DigitsError::NotADigit(b'x')),
        (b"1001\n", DigitsError::TooLong { max }),
        (b"\xff", DigitsError::NotADigit(0xff)),
    ];
    for (input, err) in cases {
        assert_eq!(digits::decode(input, max), Err(err.clone()), "input {input:?}");
    }
}
