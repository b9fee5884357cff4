//! The Linux guest's TCP echo server for `cargo xtask bench`'s echo row:
//! port 7, a thread per connection, 16 KiB reads (what Toro's
//! `examples/echo` does), each echoed whole before the next read; ends
//! its side when the peer ends its own.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

/// Bytes moved per read, as in `examples/echo`.
const CHUNK: usize = 16 * 1024;

fn echo(mut stream: TcpStream) {
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(count) => {
                if stream.write_all(&buffer[..count]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

fn main() {
    let listener = match TcpListener::bind(("0.0.0.0", 7)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("toro-bench-echo: cannot listen on tcp port 7: {error}");
            std::process::exit(1);
        }
    };
    println!("toro-bench: echo listening on tcp port 7");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || echo(stream));
    }
}
