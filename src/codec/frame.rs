//! Length-prefixed frames (in progress).
