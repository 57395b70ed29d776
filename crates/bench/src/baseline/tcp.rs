//! `tcp_rtt`: raw TCP ping-pong between two processes, a 64-byte message
//! and an 8-byte ack, TCP_NODELAY, one at a time. Blocking sockets on both
//! ends: the fewest steps between two processes that the kernel offers.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use anyhow::Context as _;

/// Bytes per message, matching the chat message text.
const MESSAGE_BYTES: usize = 64;
/// Bytes per ack.
const ACK_BYTES: usize = 8;

/// The `serve-tcp` child: prints its address, then answers each 64-byte
/// message with an 8-byte ack, one thread per connection, until killed.
pub fn serve() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let stream = stream.context("accepting a connection")?;
        std::thread::spawn(move || {
            if let Err(e) = echo(stream) {
                eprintln!("serve-tcp: {e}");
            }
        });
    }
    Ok(())
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut message = [0u8; MESSAGE_BYTES];
    let ack = [1u8; ACK_BYTES];
    loop {
        match stream.read_exact(&mut message) {
            Ok(()) => stream.write_all(&ack)?,
            // The bench closed the connection: done.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// The client end: one connection, one message in flight.
#[derive(Debug)]
pub(crate) struct Pinger {
    stream: TcpStream,
}

impl Pinger {
    pub(crate) fn connect(addr: SocketAddr) -> anyhow::Result<Pinger> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Pinger { stream })
    }

    /// `n` round trips, each pushed onto `out` in microseconds.
    pub(crate) fn round(&mut self, n: usize, out: &mut Vec<f64>) -> anyhow::Result<()> {
        let message = [7u8; MESSAGE_BYTES];
        let mut ack = [0u8; ACK_BYTES];
        for _ in 0..n {
            let start = Instant::now();
            self.stream.write_all(&message).context("sending a TCP ping")?;
            self.stream.read_exact(&mut ack).context("reading a TCP ack")?;
            out.push(start.elapsed().as_secs_f64() * 1e6);
        }
        Ok(())
    }
}
