//! Fuzz target for the request parsers of `files` and `exec`: the JSON
//! header a peer sends, already decoded into a map (the header codec has
//! its own target), and the names inside it.
//!
//! Checks: no parser panics; an accepted upload announces exactly its
//! `file_size - offset` body (what decides whether a refused connection can
//! be kept); every name `clean_name` accepts is relative, free of `..`, NUL
//! and empty components, outside the hidden directory, and no longer than
//! the raw name; cleaning is idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use wireloop::services::exec::proto::parse_request;
use wireloop::services::files::proto::{announced_body, parse, Request};
use wireloop::services::files::storage::{clean_name, HIDDEN, MAX_NAME};

fn check_name(raw: &str) {
    let Ok(name) = clean_name(raw) else { return };
    assert!(!name.is_empty() && name.len() <= raw.len() && name.len() <= MAX_NAME);
    assert!(!name.starts_with('/') && !name.contains('\0'));
    for comp in name.split('/') {
        assert!(!comp.is_empty() && comp != "." && comp != "..", "{name:?}");
    }
    assert_ne!(name.split('/').next(), Some(HIDDEN));
    assert_eq!(clean_name(&name).as_deref(), Ok(name.as_str()));
}

fuzz_target!(|data: &[u8]| {
    let Ok(map) = serde_json::from_slice::<Map<String, Value>>(data) else {
        // Not an object: also try the input as a raw name.
        if let Ok(s) = std::str::from_utf8(data) {
            check_name(s);
        }
        return;
    };
    let body = announced_body(&map);
    match parse(&map) {
        Ok(Request::Put(p)) => {
            assert!(p.offset <= p.file_size);
            assert_eq!(body, Some(p.file_size - p.offset));
            assert_eq!(p.md5.len(), 32);
            check_name(&p.file_name);
        }
        Ok(Request::Get { file_name, .. }) | Ok(Request::Stat { file_name }) => {
            assert_eq!(body, Some(0));
            check_name(&file_name);
        }
        Ok(Request::List { prefix, limit, .. }) => {
            assert_eq!(body, Some(0));
            assert_ne!(limit, Some(0));
            check_name(&prefix);
        }
        Err(e) => assert!(!e.is_empty()),
    }
    let _ = parse_request(&map);
});
