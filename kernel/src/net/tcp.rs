//! `TcpListener` and `TcpStream`, shaped like std's.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::time::Duration;

use toro_net::stack::TcpHandle;
use toro_net::{ConnectState, NetError};

use super::addr::{from_endpoint, resolve, to_endpoint, ToSocketAddrs};
use super::instance::{self, Interest};
use super::{timeout_micros, to_io, topology, wait_to_io, Shutdown};
use crate::io::{self, ErrorKind, Read, Write};

/// How long an accepting thread waits on one of several instances of its
/// CPU before looking at the others (only when its CPU owns more than one
/// instance the listener uses, e.g. the loopback and a NIC).
const ACCEPT_ROTATE_MICROS: u64 = 10_000;

/// A listening TCP port, like `std::net::TcpListener`. Its clones
/// ([`TcpListener::try_clone`]) share one listening port.
pub struct TcpListener {
    inner: Arc<Listener>,
}

/// The listening port a listener and its clones share.
struct Listener {
    local: SocketAddr,
    instances: Vec<usize>,
    /// Round robin over instances for accepts from CPUs that own none.
    next: AtomicUsize,
    nonblocking: AtomicBool,
}

impl TcpListener {
    /// Listens on `address`: on every instance for `0.0.0.0` (each CPU's
    /// connections are accepted on that CPU), on the loopback for
    /// `127.0.0.1`. Port 0 picks a free port. Each instance holds up to
    /// `StackConfig::listen_backlog` (128) connections in their handshake
    /// or waiting for `accept`; beyond that a SYN is dropped and the
    /// client retransmits it, as with Linux's `listen(2)` backlog.
    pub fn bind<A: ToSocketAddrs>(address: A) -> io::Result<TcpListener> {
        let mut last_error = None;
        for address in resolve(&address)? {
            match Self::bind_one(address) {
                Ok(listener) => return Ok(listener),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(io::Error::from_static(ErrorKind::InvalidInput, "no address")))
    }

    fn bind_one(address: SocketAddr) -> io::Result<TcpListener> {
        let instances = super::instances_for(address.ip())?;
        let mut port = address.port();
        let mut bound = Vec::new();
        for &id in &instances {
            let result = instance::on_owner(id, || {
                instance::with_local(id, |i| i.stack.tcp_listen(port)).unwrap_or(Err(NetError::BadHandle))
            });
            match result {
                Ok(chosen) => {
                    port = chosen;
                    bound.push(id);
                }
                Err(error) => {
                    for &id in &bound {
                        instance::on_owner(id, || instance::with_local(id, |i| i.stack.tcp_unlisten(port)));
                    }
                    return Err(to_io(error));
                }
            }
        }
        let listener = Listener {
            local: SocketAddr::new(address.ip(), port),
            instances,
            next: AtomicUsize::new(0),
            nonblocking: AtomicBool::new(false),
        };
        Ok(TcpListener { inner: Arc::new(listener) })
    }

    /// Another handle to the same listening port, as std's: either
    /// accepts its connections (a thread per CPU may each take a clone;
    /// each still takes the connections that arrived on its own CPU), the
    /// non-blocking mode and TTL are shared, and the port closes when the
    /// last handle is dropped.
    pub fn try_clone(&self) -> io::Result<TcpListener> {
        Ok(TcpListener { inner: self.inner.clone() })
    }

    /// Always `Ok(None)`: a listening port here has no error to report
    /// later (a connection that fails in its handshake never reaches
    /// `accept`), as a Linux listener's `SO_ERROR` stays 0.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(None)
    }

    /// The address it listens on (with the port chosen for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.local)
    }

    /// Waits for a connection. On a CPU that owns instances, it takes the
    /// connections that arrived there; elsewhere it goes to an owner CPU
    /// for it (and the stream's calls go there too).
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let port = self.inner.local.port();
        let nonblocking = self.inner.nonblocking.load(Ordering::Relaxed);
        let here = crate::cpu::current();
        let local: Vec<usize> =
            self.inner.instances.iter().copied().filter(|&id| instance::owner(id) == here).collect();
        // The peer's address is read in the same step as the accept: the
        // poll that follows a wait's try (`wait_on`) may take in the
        // peer's reset, after which the socket has no peer any more (a
        // separate `peer_addr` then said NotConnected, and a connection
        // reset before the server took it failed `accept`).
        let accept = |i: &mut instance::Instance| {
            let handle = i.stack.tcp_accept(port)?;
            match i.stack.tcp_peer(handle) {
                Ok(peer) => Ok((handle, peer)),
                Err(_) => {
                    // Gone already (no accepted socket lacks a peer today).
                    i.stack.tcp_abort(handle);
                    Err(NetError::WouldBlock)
                }
            }
        };
        let try_accept = |id: usize| {
            instance::with_local(id, |i| {
                i.pump();
                accept(i)
            })
            .unwrap_or(Err(NetError::BadHandle))
        };
        let (id, (handle, peer)) = if !local.is_empty() {
            'found: loop {
                for &id in &local {
                    match try_accept(id) {
                        Ok(found) => {
                            // A scheduling point even when a connection is
                            // ready at once: during a flood the backlog
                            // keeps one ready, every take polls the stack
                            // (milliseconds with 1000 sockets under TCG),
                            // and an accepting loop ran for over 2 s
                            // without one (the watchdog reported it on a
                            // loaded host; test webserver-storms-qemu-2).
                            crate::thread::yield_now();
                            break 'found (id, found);
                        }
                        Err(NetError::WouldBlock) => {}
                        Err(error) => return Err(to_io(error)),
                    }
                }
                if nonblocking {
                    return Err(to_io(NetError::WouldBlock));
                }
                let id = local[0];
                let rotate = (local.len() > 1).then_some(ACCEPT_ROTATE_MICROS);
                match instance::wait_on(id, Interest::Accept(port), rotate, false, accept) {
                    Ok(found) => break 'found (id, found),
                    Err(instance::WaitError::TimedOut) => {}
                    Err(error) => return Err(wait_to_io(error)),
                }
            }
        } else {
            let nics: Vec<usize> =
                self.inner.instances.iter().copied().filter(|id| topology().nics.contains(id)).collect();
            let candidates = if nics.is_empty() { &self.inner.instances } else { &nics };
            let turn = self.inner.next.load(Ordering::Relaxed);
            self.inner.next.store(turn.wrapping_add(1), Ordering::Relaxed);
            let id = candidates[turn % candidates.len()];
            let found =
                instance::on_owner(id, || instance::wait_on(id, Interest::Accept(port), None, nonblocking, accept))
                    .map_err(wait_to_io)?;
            (id, found)
        };
        Ok((TcpStream::new(id, handle), from_endpoint(peer)))
    }

    /// An endless iterator of accepted connections, like std's.
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// Makes `accept` return `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.inner.nonblocking.store(nonblocking, Ordering::Relaxed);
        Ok(())
    }

    /// Sets the time-to-live of the connections accepted from now on (on
    /// every instance it listens on; 1-255, else `InvalidInput`, as for
    /// [`TcpStream::set_ttl`]). Connections still in their handshake get
    /// it too.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        let (ttl, port) = (super::ttl_byte(ttl)?, self.inner.local.port());
        for &id in &self.inner.instances {
            instance::on_owner(id, || {
                instance::with_local(id, |i| i.stack.tcp_listen_set_ttl(port, ttl)).unwrap_or(Err(NetError::BadHandle))
            })
            .map_err(to_io)?;
        }
        Ok(())
    }

    /// The time-to-live its connections get (64 unless set).
    pub fn ttl(&self) -> io::Result<u32> {
        let (id, port) = (self.inner.instances[0], self.inner.local.port());
        instance::on_owner(id, || {
            instance::with_local(id, |i| i.stack.tcp_listen_ttl(port)).unwrap_or(Err(NetError::BadHandle))
        })
        .map(u32::from)
        .map_err(to_io)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let port = self.local.port();
        for &id in &self.instances {
            instance::on_owner(id, || instance::with_local(id, |i| i.stack.tcp_unlisten(port)));
        }
    }
}

/// The iterator of [`TcpListener::incoming`].
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

/// A TCP connection, like `std::net::TcpStream`. Its clones
/// ([`TcpStream::try_clone`]) share one socket, its options and its
/// shutdown state; the socket closes when the last is dropped.
pub struct TcpStream {
    inner: Arc<Stream>,
}

/// The socket a stream and its clones share.
struct Stream {
    instance: usize,
    handle: TcpHandle,
    options: super::Options,
    read_shut: AtomicBool,
    /// A read, write or `take_error` of it (or a clone) has reported the
    /// connection's reset: `take_error` does not report it again.
    error_reported: AtomicBool,
}

impl TcpStream {
    fn new(instance: usize, handle: TcpHandle) -> Self {
        let stream = Stream {
            instance,
            handle,
            options: super::Options::new(),
            read_shut: AtomicBool::new(false),
            error_reported: AtomicBool::new(false),
        };
        Self { inner: Arc::new(stream) }
    }

    /// Another handle to the same connection, as std's: reads, writes and
    /// options of either act on the one socket (so a thread on one CPU
    /// can read while a thread on another writes), and the connection
    /// closes when the last handle is dropped. Its calls go to the
    /// socket's owner CPU like the original's.
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream { inner: self.inner.clone() })
    }

    fn options(&self) -> &super::Options {
        &self.inner.options
    }

    /// Connects to the first of `address` that answers. Each address has
    /// 127 s to answer (`toro.tcp_connect_timeout=SECONDS|off`), then
    /// `TimedOut`, as std's connect on Linux gives up after its 6 SYN
    /// retransmissions (smoltcp alone would retransmit for ever).
    pub fn connect<A: ToSocketAddrs>(address: A) -> io::Result<TcpStream> {
        let mut last_error = None;
        for address in resolve(&address)? {
            match Self::connect_one(&address, super::default_connect_micros()) {
                Ok(stream) => return Ok(stream),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(io::Error::from_static(ErrorKind::InvalidInput, "no address")))
    }

    /// Connects to `address`, giving up with `TimedOut` after `timeout`.
    pub fn connect_timeout(address: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let micros = timeout_micros(Some(timeout))?;
        Self::connect_one(address, Some(micros))
    }

    fn connect_one(address: &SocketAddr, timeout: Option<u64>) -> io::Result<TcpStream> {
        let id = super::route(Some(address.ip()))?;
        let remote = to_endpoint(*address);
        instance::on_owner(id, || {
            let handle = instance::with_local(id, |i| i.stack.tcp_connect(remote))
                .unwrap_or(Err(NetError::BadHandle))
                .map_err(to_io)?;
            let result = instance::wait_on(id, Interest::Connected(handle), timeout, false, |i| {
                match i.stack.tcp_connect_state(handle) {
                    Ok(ConnectState::Pending) => Err(NetError::WouldBlock),
                    Ok(ConnectState::Established) => Ok(()),
                    Err(error) => Err(error),
                }
            });
            match result {
                Ok(()) => Ok(TcpStream::new(id, handle)),
                Err(error) => {
                    instance::with_local(id, |i| i.stack.tcp_abort(handle));
                    Err(wait_to_io(error))
                }
            }
        })
    }

    /// Runs `function` on this stream's instance, on its owner CPU.
    fn with<R>(&self, function: impl FnOnce(&mut instance::Instance) -> Result<R, NetError>) -> io::Result<R> {
        let id = self.inner.instance;
        instance::on_owner(id, || instance::with_local(id, function).unwrap_or(Err(NetError::BadHandle))).map_err(to_io)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        let handle = self.inner.handle;
        self.with(|i| i.stack.tcp_peer(handle)).map(from_endpoint)
    }

    /// This side's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let handle = self.inner.handle;
        self.with(|i| i.stack.tcp_local(handle)).map(from_endpoint)
    }

    /// The CPU whose instance carries this connection (Toro's addition).
    pub fn cpu(&self) -> usize {
        instance::owner(self.inner.instance)
    }

    /// Shuts down reading, writing or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.inner.read_shut.store(true, Ordering::Relaxed);
        }
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            let handle = self.inner.handle;
            self.with(|i| {
                let result = i.stack.tcp_shutdown_write(handle);
                i.pump();
                result
            })?;
        }
        Ok(())
    }

    /// Resets the connection now (an RST; data not yet sent is dropped)
    /// and frees its socket: what std reaches through `SO_LINGER` 0 and a
    /// close. For a peer that stopped reading, whose unsent data would
    /// otherwise keep the closed socket waiting on its window.
    pub fn abort(self) {
        let (id, handle) = (self.inner.instance, self.inner.handle);
        instance::on_owner(id, || {
            instance::with_local(id, |i| {
                i.stack.tcp_abort(handle);
                i.pump();
            })
        });
        // Drop then finds the socket closed already and does nothing more.
    }

    /// Nagle's algorithm off (`true`; the default here, unlike std, for
    /// request/response traffic) or on.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        let handle = self.inner.handle;
        self.with(|i| i.stack.tcp_set_nodelay(handle, nodelay))
    }

    /// Whether Nagle's algorithm is off.
    pub fn nodelay(&self) -> io::Result<bool> {
        let handle = self.inner.handle;
        self.with(|i| i.stack.tcp_nodelay(handle))
    }

    /// Sets the IP time-to-live (IPv6: hop limit) of the connection's
    /// packets. std takes a `u32`; 0 and values over 255 are
    /// `InvalidInput`, as Linux refuses them.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        let (ttl, handle) = (super::ttl_byte(ttl)?, self.inner.handle);
        self.with(|i| i.stack.tcp_set_ttl(handle, ttl))
    }

    /// The time-to-live of the connection's packets (64 unless set).
    pub fn ttl(&self) -> io::Result<u32> {
        let handle = self.inner.handle;
        self.with(|i| i.stack.tcp_ttl(handle)).map(u32::from)
    }

    /// The connection's pending error, as std's (`SO_ERROR`):
    /// `Some(ConnectionReset)` once the peer reset the connection
    /// (`Some(TimedOut)` once its peer stayed silent past the user timeout,
    /// `toro.tcp_user_timeout=`) and no read or write of this stream or its
    /// clones has reported that yet; then `None` again. Data that arrived before the
    /// reset is read first: until it is, `None` (Linux reports the reset at
    /// once). Reads and writes keep giving that error after it
    /// (Linux's give end of stream and `BrokenPipe` once it was reported).
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        if self.inner.error_reported.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let handle = self.inner.handle;
        let Some(error) = self.with(|i| i.stack.tcp_broken(handle))? else {
            return Ok(None);
        };
        self.inner.error_reported.store(true, Ordering::Relaxed);
        Ok(Some(to_io(error)))
    }

    /// Notes that `result` reported the connection's reset or timeout
    /// (`take_error`; not a read or write timeout, which ends one wait).
    fn noted<T>(&self, result: Result<T, instance::WaitError>) -> io::Result<T> {
        if let Err(instance::WaitError::Net(NetError::ConnectionReset | NetError::TimedOut)) = &result {
            self.inner.error_reported.store(true, Ordering::Relaxed);
        }
        result.map_err(wait_to_io)
    }

    /// Reads received data without taking it, as std's `peek`: the next
    /// `read` or `peek` returns the same bytes. Waits like `read` (its
    /// timeout, non-blocking mode); `Ok(0)` at the end of the stream.
    pub fn peek(&self, buffer: &mut [u8]) -> io::Result<usize> {
        self.receive(buffer, true)
    }

    fn read_some(&self, buffer: &mut [u8]) -> io::Result<usize> {
        self.receive(buffer, false)
    }

    #[inline(never)]
    fn receive(&self, buffer: &mut [u8], peek: bool) -> io::Result<usize> {
        if self.inner.read_shut.load(Ordering::Relaxed) || buffer.is_empty() {
            return Ok(0);
        }
        let (id, handle) = (self.inner.instance, self.inner.handle);
        let timeout = self.inner.options.read_micros();
        let nonblocking = self.inner.options.nonblocking();
        let received = instance::on_owner(id, || {
            instance::wait_on(id, Interest::Readable(handle), timeout, nonblocking, |i| match peek {
                true => i.stack.tcp_peek(handle, buffer),
                false => i.stack.tcp_recv(handle, buffer),
            })
        });
        self.noted(received)
    }

    #[inline(never)]
    fn write_some(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let (id, handle) = (self.inner.instance, self.inner.handle);
        let timeout = self.inner.options.write_micros();
        let nonblocking = self.inner.options.nonblocking();
        let sent = instance::on_owner(id, || {
            instance::wait_on(id, Interest::Writable(handle), timeout, nonblocking, |i| i.stack.tcp_send(handle, data))
        });
        self.noted(sent)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let (id, handle) = (self.instance, self.handle);
        instance::on_owner(id, || {
            instance::with_local(id, |i| {
                i.stack.tcp_close(handle);
                i.pump();
            })
        });
    }
}

impl Read for TcpStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.read_some(buffer)
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        self.read_some(buffer)
    }
}

impl Write for TcpStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_some(data)
    }

    /// Returns at once: each write is already queued for sending (std's
    /// `TcpStream::flush` does nothing either).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for &TcpStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write_some(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

crate::io::impl_embedded_io!(TcpStream: Read, Write);

impl core::fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpStream").field("instance", &self.inner.instance).field("handle", &self.inner.handle).finish()
    }
}

impl core::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.inner.local)
            .field("instances", &self.inner.instances)
            .finish()
    }
}

super::socket_options!(TcpStream);
