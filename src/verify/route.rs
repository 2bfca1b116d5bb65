//! How the routing table treats a destination, asked without sending anything: selection
//! uses it to pick destinations a connection can reach.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

/// How the routing table treats a destination, learnt without sending anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Routed off this namespace: the OUTPUT rules see connections to it.
    Routed,
    /// An address of this namespace: local traffic is never redirected, by design.
    Local,
    /// No route (or prohibited): connect fails before any NAT rule is evaluated.
    Unroutable(String),
}

/// Asks the routing table with a connected UDP socket (no packet is sent).
pub fn route_to(destination: SocketAddr) -> Route {
    if destination.ip().is_loopback() {
        return Route::Local;
    }
    let unspecified: IpAddr = match destination {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = match UdpSocket::bind((unspecified, 0)) {
        Ok(socket) => socket,
        Err(e) => return Route::Unroutable(format!("cannot open a socket of that family: {e}")),
    };
    if let Err(e) = socket.connect(destination) {
        return Route::Unroutable(e.to_string());
    }
    // A local address is routed through `lo` with itself as the preferred source.
    match socket.local_addr() {
        Ok(source) if source.ip() == destination.ip() => Route::Local,
        _ => Route::Routed,
    }
}

/// The interface holding the source address the kernel picks for `destination`: where a
/// connection there leaves, as far as the source address tells (the usual case of one
/// address per interface).
pub fn source_interface(destination: SocketAddr) -> Option<String> {
    let unspecified: IpAddr = match destination {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((unspecified, 0)).ok()?;
    socket.connect(destination).ok()?;
    let source = socket.local_addr().ok()?.ip();
    nix::ifaddrs::getifaddrs().ok()?.find_map(|interface| {
        let address = interface.address?;
        let ip: IpAddr = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else {
            IpAddr::V6(address.as_sockaddr_in6()?.ip())
        };
        (ip == source).then_some(interface.interface_name)
    })
}
