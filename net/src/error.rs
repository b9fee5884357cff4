//! The network subsystem's one error type; the kernel maps each variant to
//! the `std::io::ErrorKind` std would report.

/// Why a network operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// Nothing to do yet (no data, no room, no pending connection); a
    /// blocking caller waits and retries.
    WouldBlock,
    /// The peer reset the connection, or it broke before finishing.
    ConnectionReset,
    /// The peer answered a connect with a reset (no one listens there).
    ConnectionRefused,
    /// The connection is not (or no longer) established for this.
    NotConnected,
    /// Writing after this side or the connection was shut down.
    BrokenPipe,
    /// The local port is taken.
    AddrInUse,
    /// No free local port, or the address is not ours.
    AddrNotAvailable,
    /// A bad argument (port 0 for a peer, unspecified address, ...).
    InvalidInput,
    /// A datagram larger than the socket's buffer or the link.
    TooLarge,
    /// The handle names no socket of this stack (closed already).
    BadHandle,
    /// No route to the destination (no address or gateway configured), or
    /// a router said the destination's network cannot be reached (ICMP).
    Unreachable,
    /// The destination host cannot be reached: a router said so (ICMP),
    /// or the host (or the gateway to it) never answered ARP or
    /// neighbour discovery (Linux's `EHOSTUNREACH`, "no route to host").
    HostUnreachable,
    /// Not allowed without an option set first (a broadcast without
    /// `set_broadcast(true)`).
    PermissionDenied,
    /// A fixed table is full (the interface's multicast groups, DNS
    /// queries in flight).
    NoBufferSpace,
    /// A host name has no address (or no DNS server answered).
    NotFound,
    /// The peer stopped answering while data waited for its ACK, for
    /// longer than the user timeout (`StackConfig::tcp_user_timeout_micros`,
    /// Linux's `ETIMEDOUT` after `tcp_retries2`).
    TimedOut,
}

impl NetError {
    /// The error as a fixed message.
    pub fn message(self) -> &'static str {
        match self {
            Self::WouldBlock => "operation would block",
            Self::ConnectionReset => "connection reset by peer",
            Self::ConnectionRefused => "connection refused",
            Self::NotConnected => "not connected",
            Self::BrokenPipe => "broken pipe",
            Self::AddrInUse => "address in use",
            Self::AddrNotAvailable => "address not available",
            Self::InvalidInput => "invalid argument",
            Self::TooLarge => "message too large",
            Self::BadHandle => "no such socket",
            Self::Unreachable => "network unreachable",
            Self::HostUnreachable => "no route to host",
            Self::PermissionDenied => "permission denied",
            Self::NoBufferSpace => "no buffer space available",
            Self::NotFound => "failed to look up the name: no address found",
            Self::TimedOut => "connection timed out",
        }
    }
}

impl core::fmt::Display for NetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}
