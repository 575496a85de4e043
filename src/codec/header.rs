//! JSON header + streamed body (in progress).
