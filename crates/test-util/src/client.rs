//! A blocking RESP client for tests, with timeouts on every read and write.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::resp::{encode_command, escape, parse_reply, Reply};

/// Default bound on one read or write; a proxy that does not answer within it fails the test.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on establishing a TCP connection to a loopback port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read chunk size.
const READ_CHUNK: usize = 64 * 1024;

/// What a bounded read produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// One complete reply and its exact bytes.
    Frame { raw: Vec<u8>, reply: Reply },
    /// The peer closed (or reset) the connection; `pending` holds bytes of an incomplete reply.
    Closed { pending: Vec<u8> },
    /// Nothing complete arrived in time; `pending` holds what did arrive.
    Timeout { pending: Vec<u8> },
}

/// A blocking RESP client over one TCP connection.
pub struct RespClient {
    stream: TcpStream,
    buf: Vec<u8>,
    peer: SocketAddr,
    timeout: Duration,
}

// === impl RespClient ===

impl RespClient {
    /// Connects to `127.0.0.1:port`, panicking with context on failure.
    pub fn connect(port: u16) -> Self {
        Self::try_connect(port).unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
    }

    pub fn try_connect(port: u16) -> std::io::Result<Self> {
        Self::try_connect_to(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Connects to `peer` (another loopback address: a service VIP of a local control plane).
    pub fn try_connect_to(peer: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&peer, CONNECT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(DEFAULT_IO_TIMEOUT))?;
        Ok(RespClient {
            stream,
            buf: Vec::new(),
            peer,
            timeout: DEFAULT_IO_TIMEOUT,
        })
    }

    /// Bound for the next reads that do not take an explicit timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .unwrap_or_else(|e| panic!("write to {}: {e}", self.peer));
    }

    pub fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one command as a RESP array without reading.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.send_raw(&encode_command(args));
    }

    /// Sends one command and reads its reply.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        self.send(args);
        self.read_reply()
    }

    /// Sends one command and returns the exact bytes of its reply.
    pub fn cmd_raw<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Vec<u8> {
        self.send(args);
        self.read_raw()
    }

    /// Writes all commands in one write, then reads one reply per command.
    pub fn pipeline<A: AsRef<[u8]>>(&mut self, commands: &[Vec<A>]) -> Vec<Reply> {
        let mut out = Vec::new();
        for command in commands {
            out.extend_from_slice(&encode_command(command));
        }
        self.send_raw(&out);
        (0..commands.len()).map(|_| self.read_reply()).collect()
    }

    /// Reads one reply, panicking on timeout, close or garbage.
    pub fn read_reply(&mut self) -> Reply {
        self.read_frame().1
    }

    /// Reads one reply and returns its exact bytes.
    pub fn read_raw(&mut self) -> Vec<u8> {
        self.read_frame().0
    }

    pub fn read_frame(&mut self) -> (Vec<u8>, Reply) {
        match self.read_outcome(self.timeout) {
            ReadOutcome::Frame { raw, reply } => (raw, reply),
            other => panic!("reading a reply from {}: {}", self.peer, describe(&other)),
        }
    }

    /// Reads one reply within `timeout`, reporting a close or a timeout instead of panicking.
    /// Garbage (bytes that are not RESP) still panics: no peer under test may send it.
    pub fn read_outcome(&mut self, timeout: Duration) -> ReadOutcome {
        let deadline = Instant::now() + timeout;
        loop {
            match parse_reply(&self.buf) {
                Ok(Some((reply, used))) => {
                    let raw: Vec<u8> = self.buf.drain(..used).collect();
                    return ReadOutcome::Frame { raw, reply };
                }
                Ok(None) => {}
                Err(e) => panic!(
                    "peer {} sent bytes that are not RESP ({e}): {}",
                    self.peer,
                    escape(&self.buf)
                ),
            }
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Closed => {
                    return ReadOutcome::Closed {
                        pending: std::mem::take(&mut self.buf),
                    }
                }
                Fill::Timeout => {
                    return ReadOutcome::Timeout {
                        pending: self.buf.clone(),
                    }
                }
            }
        }
    }

    /// Waits up to `timeout` for the peer to close the connection, discarding anything it
    /// sends meanwhile. Returns true if it closed.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.buf.clear();
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Closed => return true,
                Fill::Timeout => return false,
            }
        }
    }

    /// Reads everything until the peer closes (bounded), returning the bytes.
    pub fn read_until_closed(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Closed => return Some(std::mem::take(&mut self.buf)),
                Fill::Timeout => return None,
            }
        }
    }

    /// Half-closes the write side (the peer reads EOF).
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// A second handle on the same socket, e.g. to write from another thread.
    pub fn try_clone_stream(&self) -> std::io::Result<TcpStream> {
        self.stream.try_clone()
    }

    fn fill(&mut self, deadline: Instant) -> Fill {
        let now = Instant::now();
        if now >= deadline {
            return Fill::Timeout;
        }
        // A zero read timeout means "block forever" to std, so keep at least 1 ms.
        let wait = (deadline - now).max(Duration::from_millis(1));
        if self.stream.set_read_timeout(Some(wait)).is_err() {
            return Fill::Closed;
        }
        let mut chunk = vec![0u8; READ_CHUNK];
        match self.stream.read(&mut chunk) {
            Ok(0) => Fill::Closed,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Fill::Data
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Fill::Timeout
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Fill::Data,
            // Reset, aborted, broken pipe: the peer is gone.
            Err(_) => Fill::Closed,
        }
    }
}

enum Fill {
    Data,
    Closed,
    Timeout,
}

fn describe(outcome: &ReadOutcome) -> String {
    match outcome {
        ReadOutcome::Frame { reply, .. } => format!("{reply:?}"),
        ReadOutcome::Closed { pending } => {
            format!("connection closed (pending bytes: {:?})", escape(pending))
        }
        ReadOutcome::Timeout { pending } => {
            format!("timed out (pending bytes: {:?})", escape(pending))
        }
    }
}
