//! Real traffic through IPVS: a tiny HTTP/1.0 [`Backend`] that answers with
//! its name, a client ([`get`], and [`Held`] for a connection kept open) and
//! the connection table as `ipvsadm -Lnc` shows it ([`IpvsConnection`]).
//!
//! Sockets belong to the namespace they were created in, whichever thread
//! uses them later: both sides create theirs inside [`Netns::run`] and then
//! use them from ordinary threads.
//!
//! The backend's protocol, on every connection:
//! - `GET <path> HTTP/1.0` and headers: `200 OK`, the backend's name as the
//!   body, and the connection closes;
//! - `GET /hold HTTP/1.0` and headers: `200 OK` without a length, then the
//!   name and a newline; from then on each line received is answered with
//!   `<name> <line>` and a newline, until the client closes its side.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Netns;

/// How long the client waits to connect, and then for each read or write.
/// Traffic that works answers in milliseconds, even under emulation; tests
/// that expect a failure should not wait long for it.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Open connections by number, so that dropping the backend closes them.
type Connections = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// An HTTP/1.0 server in a namespace, answering with its name (see the
/// module documentation); stops and closes its connections on drop.
#[derive(Debug)]
pub struct Backend {
    name: String,
    listener: TcpListener,
    connections: Connections,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl Backend {
    /// Listens on `addr` inside `ns` and serves, one thread a connection.
    pub fn start(ns: &Netns, name: &str, addr: SocketAddr) -> Self {
        let listener = ns
            .run(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("{name}: cannot listen on {addr} in {}: {e}", ns.name()));
        let connections = Connections::default();
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let listener = listener.try_clone().unwrap();
            let connections = Arc::clone(&connections);
            let stopping = Arc::clone(&stopping);
            let name = name.to_owned();
            std::thread::spawn(move || accept(&listener, &name, &connections, &stopping))
        };
        Backend {
            name: name.to_owned(),
            listener,
            connections,
            stopping,
            acceptor: Some(acceptor),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Shutting down a listening socket wakes the thread blocked in
        // accept() with an error: no polling, no connection to ourselves
        // (which would have to come from inside the namespace).
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let workers = self
            .acceptor
            .take()
            .map(|acceptor| acceptor.join().unwrap_or_default())
            .unwrap_or_default();
        // The acceptor registered every connection before starting its
        // worker, so all of them are here now.
        for stream in lock(&self.connections).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        for worker in workers {
            let _ = worker.join();
        }
    }
}

/// Accepts until the backend stops; returns the workers still running.
fn accept(
    listener: &TcpListener,
    name: &str,
    connections: &Connections,
    stopping: &AtomicBool,
) -> Vec<JoinHandle<()>> {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for (id, stream) in (0u64..).zip(listener.incoming()) {
        let stream = match stream {
            Ok(stream) => stream,
            Err(_) if stopping.load(Ordering::SeqCst) => break,
            // A connection reset before we took it (ECONNABORTED): the
            // next one may be fine.
            Err(e) => {
                eprintln!("{name}: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        lock(connections).insert(id, registered);
        workers.retain(|worker| !worker.is_finished());
        let (name, connections) = (name.to_owned(), Arc::clone(connections));
        workers.push(std::thread::spawn(move || {
            // A client that goes away mid-request is its own problem: the
            // test on its side sees the failure.
            let _ = serve(stream, &name);
            lock(&connections).remove(&id);
        }));
    }
    workers
}

fn serve(stream: TcpStream, name: &str) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    // Headers are read and ignored, up to the empty line that ends them.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
    }
    if path != "/hold" {
        let length = name.len();
        return writer.write_all(
            format!("HTTP/1.0 200 OK\r\nContent-Length: {length}\r\n\r\n{name}").as_bytes(),
        );
    }
    writer.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{name}\n").as_bytes())?;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        writer.write_all(format!("{name} {}\n", line.trim_end()).as_bytes())?;
        line.clear();
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A worker that panicked leaves a map that is still valid.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One request from inside `ns` to `addr` on a connection of its own: the
/// name of the backend that answered.
pub fn get(ns: &Netns, addr: SocketAddr) -> io::Result<String> {
    get_within(ns, addr, TIMEOUT)
}

/// [`get`] with `timeout` on each step instead of [`TIMEOUT`]: a client
/// that gives up on a lost SYN quickly and tries again, instead of waiting
/// for TCP's retransmission (1 s, then 3 s).
pub fn get_within(ns: &Netns, addr: SocketAddr, timeout: Duration) -> io::Result<String> {
    let context = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("GET http://{addr}/ from {}: {e}", ns.name()),
        )
    };
    let mut stream = connect(ns, addr, timeout).map_err(context)?;
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(context)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(context)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.0 200 ") => Ok(body.to_owned()),
        _ => Err(context(io::Error::other(format!(
            "unexpected response {response:?}"
        )))),
    }
}

/// A connection through to a backend kept open (the backend's `/hold`), to
/// check that an established connection survives changes to the table.
#[derive(Debug)]
pub struct Held {
    reader: BufReader<TcpStream>,
    backend: String,
    local: SocketAddr,
    peer: SocketAddr,
}

impl Held {
    /// Connects from inside `ns` to `addr` and asks to hold the connection.
    pub fn open(ns: &Netns, addr: SocketAddr) -> io::Result<Self> {
        let context = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!("GET http://{addr}/hold from {}: {e}", ns.name()),
            )
        };
        let mut stream = connect(ns, addr, TIMEOUT).map_err(context)?;
        let local = stream.local_addr().map_err(context)?;
        stream
            .write_all(b"GET /hold HTTP/1.0\r\n\r\n")
            .map_err(context)?;
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).map_err(context)?;
        if !status.starts_with("HTTP/1.0 200 ") {
            return Err(context(io::Error::other(format!(
                "unexpected status line {status:?}"
            ))));
        }
        let mut line = String::new();
        while reader.read_line(&mut line).map_err(context)? > 0 && !line.trim_end().is_empty() {
            line.clear();
        }
        let mut backend = String::new();
        reader.read_line(&mut backend).map_err(context)?;
        if !backend.ends_with('\n') {
            return Err(context(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the backend named itself",
            )));
        }
        backend.truncate(backend.trim_end().len());
        Ok(Held {
            reader,
            backend,
            local,
            peer: addr,
        })
    }

    /// The name of the backend holding the connection.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The client's end: the `source` of the connection's IPVS entry.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends `line` (no newline in it) and returns the backend's answer,
    /// which is `<backend> <line>` while the connection works.
    pub fn exchange(&mut self, line: &str) -> io::Result<String> {
        let context = |e: io::Error| {
            io::Error::new(
                e.kind(),
                format!(
                    "held connection {} -> {} ({}): {e}",
                    self.local, self.peer, self.backend
                ),
            )
        };
        assert!(!line.contains('\n'), "one line at a time: {line:?}");
        self.reader
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .map_err(context)?;
        let mut answer = String::new();
        self.reader.read_line(&mut answer).map_err(context)?;
        if !answer.ends_with('\n') {
            return Err(context(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed by the other side after {answer:?}"),
            )));
        }
        answer.truncate(answer.trim_end().len());
        Ok(answer)
    }

    /// Closes cleanly: our side first, then the backend's, which must have
    /// nothing more to say.
    pub fn close(mut self) -> io::Result<()> {
        self.reader.get_ref().shutdown(Shutdown::Write)?;
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest)?;
        if rest.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "held connection {} -> {}: unexpected {rest:?} before the close",
                self.local, self.peer
            )))
        }
    }
}

/// A TCP connection created inside `ns`, with `timeout` on every step.
fn connect(ns: &Netns, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = ns.run(|| TcpStream::connect_timeout(&addr, timeout))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// One entry of the IPVS connection table, as `ipvsadm -Lnc` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsConnection {
    /// `TCP`, `UDP`, `SCTP`.
    pub protocol: String,
    /// Time left before the entry expires (ipvsadm shows whole seconds).
    pub expires: Duration,
    /// The protocol state as IPVS tracks it: `ESTABLISHED`, `SYN_RECV`,
    /// `FIN_WAIT`, `TIME_WAIT`, `CLOSE`, ... (`NONE` for templates).
    pub state: String,
    /// The client's address and port.
    pub source: SocketAddr,
    /// ipvsadm's `virtual` column: the address and port the client asked for.
    pub service: SocketAddr,
    /// The real server the connection went to.
    pub destination: SocketAddr,
}

impl Netns {
    /// The namespace's IPVS connection table, read with `ipvsadm -Lnc`.
    pub fn ipvs_connections(&self) -> Vec<IpvsConnection> {
        parse_connections(&self.ipvsadm(&["-Lnc"]))
    }
}

/// Parses `ipvsadm -Lnc` output; panics on a line it does not understand.
pub fn parse_connections(listing: &str) -> Vec<IpvsConnection> {
    let mut lines = listing.lines();
    // "IPVS connection entries", then the column titles.
    let header = (lines.next(), lines.next());
    assert!(
        matches!(header, (Some(title), Some(columns))
            if title.starts_with("IPVS connection entries") && columns.starts_with("pro expire")),
        "not an ipvsadm -Lnc listing:\n{listing}"
    );
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| parse_connection(line).unwrap_or_else(|| panic!("bad -Lnc line {line:?}")))
        .collect()
}

fn parse_connection(line: &str) -> Option<IpvsConnection> {
    // Persistence engines add columns after these six.
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [protocol, expires, state, source, service, destination, ..] = fields[..] else {
        return None;
    };
    let (minutes, seconds) = expires.split_once(':')?;
    Some(IpvsConnection {
        protocol: protocol.to_owned(),
        expires: Duration::from_secs(
            minutes.parse::<u64>().ok()? * 60 + seconds.parse::<u64>().ok()?,
        ),
        state: state.to_owned(),
        source: source.parse().ok()?,
        service: service.parse().ok()?,
        destination: destination.parse().ok()?,
    })
}

/// One HTTP/1.0 exchange with `addr` from inside `ns` (a node's API, in the
/// trials): the status and the body, waiting at most `wait` for the answer.
pub fn http_exchange(
    ns: &Netns,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    wait: Duration,
) -> io::Result<(u16, String)> {
    let answer = ns.run(|| -> io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(wait))?;
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}
