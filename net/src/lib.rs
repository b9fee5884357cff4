//! Toro's network stack, host-testable: one TCP/IP instance ([`Stack`],
//! smoltcp underneath) per owner CPU over a batched [`NetDevice`], with a
//! pool of listening sockets per port, and the HTTP/1.1 server logic
//! ([`http`]) the web server example runs, with the file-serving rules
//! ([`files`]: safe paths, validators, ranges, index pages). The kernel (`toro::net`) puts
//! std-shaped sockets and blocking on top; nothing here touches hardware
//! or blocks, so `cargo test -p toro-net` runs it all on the host,
//! including two stacks talking over an in-memory link. [`virtio_net`]
//! holds the virtio-net device rules (features, header, checksum offload,
//! merged buffers, multi-queue control) for the driver.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod config;
pub mod device;
pub mod error;
pub mod files;
pub mod gzip;
pub mod http;
pub mod neighbour;
pub mod stack;
pub mod virtio_net;

pub use config::{
    addressing_for, addressing_from, connect_timeout_from, dns_for, ipv6_for, ipv6_from, link_local, route_card,
    socket_address_from_words, socket_address_words, stray_card_words, udp_member, user_timeout_from, Addressing,
    BadTimeout, CardError, ConfigError, DnsServers, Ipv6Config, UdpMember, DEFAULT_CONNECT_TIMEOUT_SECS,
    DEFAULT_USER_TIMEOUT_SECS, QEMU_USER_ADDRESS, QEMU_USER_GATEWAY,
};
pub use device::{Capabilities, DeviceStats, MemoryDevice, NetDevice};
pub use error::NetError;
pub use smoltcp;
pub use stack::{ConnectState, DnsHandle, DnsRecord, IcmpHandle, Stack, StackConfig, StackStats, TcpHandle, UdpHandle};
