//! The tutorial's services, each a state machine over a codec, each in its
//! own file. The loop knows none of them; `wireloop serve` wires them in.

pub mod echo;
pub mod exec;
pub mod files;
pub mod framed;
pub mod handshake;
pub mod sntp;
pub mod time;
pub mod udp_echo;
