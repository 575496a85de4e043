//! The tutorial's `struct` example, with `byteorder` instead of Python's
//! `struct` and `ctypes`: two records packed into one 20-byte buffer at
//! native alignment, then a third format written over the start.
//!
//! ```text
//!  Struct('I3sf')  offset 0            Struct('4sI')  offset 12
//!  ┌──────────┬────────┬───┬──────────┐┌──────────┬──────────┐
//!  │ I  u32   │ 3s     │pad│ f  f32   ││ 4s       │ I  u32   │
//!  │ 01000000 │ 616263 │00 │ cdcc2c40 ││ 64656667 │ 65000000 │
//!  └──────────┴────────┴───┴──────────┘└──────────┴──────────┘
//!   0          4        7   8        12            16       20
//! ```
//!
//! `f` must start on a 4-byte boundary, hence the pad byte after `3s`: that is
//! what "native alignment" (Python's default `@` prefix) means. It prints
//! exactly what the Python program prints on a little-endian machine.
//!
//! ```text
//! cargo run --example struct_layout
//! ```

use byteorder::{ByteOrder, NativeEndian};

/// `Struct('I3sf')`: u32, 3 bytes, 1 pad byte, f32 — 12 bytes.
const S1_SIZE: usize = 12;
/// `Struct('4sI')`: 4 bytes, u32 — 8 bytes.
const S2_SIZE: usize = 8;

fn hex(buf: &[u8]) -> String {
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn py_bytes(b: &[u8]) -> String {
    format!("b'{}'", String::from_utf8_lossy(b))
}

fn main() {
    println!("{S1_SIZE} {S2_SIZE}");
    let mut buf = [0u8; S1_SIZE + S2_SIZE];
    println!("Before :  b'{}'", hex(&buf));

    // s1.pack_into(prebuffer, 0, 1, b'abc', 2.7)
    NativeEndian::write_u32(&mut buf[0..4], 1);
    buf[4..7].copy_from_slice(b"abc");
    NativeEndian::write_f32(&mut buf[8..12], 2.7);
    // s2.pack_into(prebuffer, s1.size, b'defg', 101)
    buf[12..16].copy_from_slice(b"defg");
    NativeEndian::write_u32(&mut buf[16..20], 101);
    println!("After pack b'{}'", hex(&buf));

    let (i, s, f) = (NativeEndian::read_u32(&buf[0..4]), &buf[4..7], NativeEndian::read_f32(&buf[8..12]));
    println!("({i}, {}, {})", py_bytes(s), f64::from(f));
    println!("({}, {})", py_bytes(&buf[12..16]), NativeEndian::read_u32(&buf[16..20]));

    // s3 = Struct('ii'); s3.pack_into(prebuffer, 0, 123, 123)
    NativeEndian::write_i32(&mut buf[0..4], 123);
    NativeEndian::write_i32(&mut buf[4..8], 123);
    println!("After pack b'{}'", hex(&buf));
    println!("({}, {})", NativeEndian::read_i32(&buf[0..4]), NativeEndian::read_i32(&buf[4..8]));
}
