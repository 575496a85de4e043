//! Uploads a file to a `files` server with the library's blocking client,
//! resuming an interrupted upload of the same file, then downloads it back
//! and checks that the bytes and MD5 match.
//!
//! ```text
//! cargo run --example upload -- 127.0.0.1:8086 Cargo.toml [NAME]
//! ```

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::process::ExitCode;

use serde_json::Value;
use wireloop::services::files::client::{md5_of, Client};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upload: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, path, rest @ ..] = &args[..] else {
        return Err("usage: upload ADDR FILE [NAME]".into());
    };
    let name = rest.first().cloned().unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path).to_string());
    let size = std::fs::metadata(path)?.len();
    let md5 = md5_of(File::open(path)?, |_| {})?;
    let mut client = Client::connect(addr.parse()?)?;

    // Resume if the server holds an interrupted upload of this very file.
    let offset = match client.stat(&name) {
        Ok(st)
            if st.get("partial_file_size").and_then(Value::as_u64) == Some(size)
                && st.get("partial_md5").and_then(Value::as_str) == Some(&md5) =>
        {
            st["partial_size"].as_u64().unwrap_or(0)
        }
        _ => 0,
    };
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let stored = client.put(&name, size, &md5, offset, true, file, |_| {})?;
    println!("stored {} ({} bytes from offset {offset}, md5 {})", stored.file_name, stored.file_size, stored.md5);

    let mut copy = Vec::new();
    let got = client.get(&stored.file_name, &mut copy, |_, _| {})?;
    if copy != std::fs::read(path)? {
        return Err("the downloaded bytes differ".into());
    }
    println!("downloaded {} ({} bytes, md5 {} verified)", got.file_name, got.file_size, got.md5);
    Ok(())
}
