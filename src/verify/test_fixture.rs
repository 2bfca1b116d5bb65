//! The configuration the verify unit tests share.

use crate::config::{
    ALWAYS_IGNORED_IPS, IgnoredDestinations, IngressConfig, Ipv6Mode, PortList, PortRange,
    ProxyConfig,
};

pub fn config() -> ProxyConfig {
    let mut destinations = IgnoredDestinations::default();
    for text in ["10.9.0.0/16", "203.0.113.9"]
        .into_iter()
        .chain(ALWAYS_IGNORED_IPS)
    {
        destinations.push(
            crate::config::addresses::parse_ignored_ip("P", text, text)
                .unwrap()
                .net,
        );
    }
    ProxyConfig {
        ignored_uid: Some(1337),
        ignored_gid: Some(1000),
        proxy_egress_port: 15001,
        ingress: Some(IngressConfig {
            proxy_port: 15000,
            app_ports: PortList::from_ranges([PortRange::single(9080)]),
        }),
        egress_ignored_ports: PortList::from_ranges([
            PortRange::single(5432),
            PortRange {
                first: 8000,
                last: 8010,
            },
            PortRange::single(22),
        ]),
        egress_ignored_destinations: destinations,
        ipv6: Ipv6Mode::Auto,
        mesh: Default::default(),
        verify: false,
    }
}
