//! The traffic fixture of the `apply_*` tests: remote hosts on a peer namespace, the proxy's
//! ports and some app ports in the app namespace, and the configurations written for it
//! (`tests/configs/traffic*`), with every outcome those configurations promise.

use std::net::{IpAddr, SocketAddr};

use super::{
    ConnectOutcome, DEFAULT_CONNECT_TIMEOUT, Listener, NetnsPair, assert_direct, assert_redirected,
};

pub const ECS_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/configs/traffic-ecs.json"
);
pub const CNI_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/configs/traffic-cni.json"
);
pub const ENV_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/configs/traffic.env");

pub const PROXY_UID: u32 = 1337;
pub const PROXY_GID: u32 = 1338;
/// An ordinary application user.
pub const APP_USER: (u32, u32) = (1000, 1000);

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The traffic fixture: remote hosts on the peer, the proxy's ports and some app ports in
/// the app namespace.
pub struct Scene {
    pub net: NetnsPair,
    pub egress_proxy: Listener,
    pub ingress_proxy: Listener,
    pub app_9080: Listener,
    pub app_8080: Listener,
    pub remote_80: Listener,
    pub remote_22: Listener,
    pub remote_5015: Listener,
    pub remote_6005: Listener,
    pub remote_7000: Listener,
}

impl Scene {
    pub fn new() -> Scene {
        let net = NetnsPair::new();
        for ip in [
            "203.0.113.7",
            "203.0.113.200",
            "169.254.169.254",
            "169.254.170.2",
            "2001:db8:ff::7",
            "2001:db8:ff:1::7",
            "fd00:ec2::254",
        ] {
            net.peer.add_address(ip.parse::<IpAddr>().unwrap());
        }
        Scene {
            egress_proxy: net.app.listen(15001),
            ingress_proxy: net.app.listen(15000),
            app_9080: net.app.listen(9080),
            app_8080: net.app.listen(8080),
            remote_80: net.peer.listen(80),
            remote_22: net.peer.listen(22),
            remote_5015: net.peer.listen(5015),
            remote_6005: net.peer.listen(6005),
            remote_7000: net.peer.listen(7000),
            net,
        }
    }

    pub fn connect_from_app(&self, dest: &str, user: (u32, u32)) -> ConnectOutcome {
        self.net
            .app
            .connect(addr(dest), Some(user), DEFAULT_CONNECT_TIMEOUT)
    }

    pub fn connect_from_peer(&self, dest: &str) -> ConnectOutcome {
        self.net
            .peer
            .connect(addr(dest), None, DEFAULT_CONNECT_TIMEOUT)
    }

    /// Every outcome the traffic config promises, both families.
    pub fn assert_configured_traffic(&self) {
        self.assert_configured_traffic_in(true);
    }

    /// Every outcome the traffic config promises for IPv4 and, when `ipv6`, for IPv6;
    /// without IPv6 rules (`ipv6` false) IPv6 connections go where they were sent.
    pub fn assert_configured_traffic_in(&self, ipv6: bool) {
        let v6_egress = "[2001:db8:ff::7]:80";
        // Ordinary egress goes to the proxy, original destination intact.
        for dest in ["203.0.113.7:80", v6_egress, "203.0.113.7:7000"] {
            let outcome = self.connect_from_app(dest, APP_USER);
            if dest == v6_egress && !ipv6 {
                assert_direct(&outcome, &self.remote_80);
            } else {
                assert_redirected(&outcome, &self.egress_proxy, addr(dest));
            }
        }
        // The root user is an ordinary user too.
        let outcome = self
            .net
            .app
            .connect(addr("203.0.113.7:80"), None, DEFAULT_CONNECT_TIMEOUT);
        assert_redirected(&outcome, &self.egress_proxy, addr("203.0.113.7:80"));
        // The proxy's own user and group go direct.
        for dest in ["203.0.113.7:80", v6_egress] {
            assert_direct(
                &self.connect_from_app(dest, (PROXY_UID, 4242)),
                &self.remote_80,
            );
            assert_direct(
                &self.connect_from_app(dest, (4242, PROXY_GID)),
                &self.remote_80,
            );
        }
        // Port 22, the 16th ignored port and a port inside an ignored range go direct.
        for (dest, remote) in [
            ("203.0.113.7:22", &self.remote_22),
            ("[2001:db8:ff::7]:22", &self.remote_22),
            ("203.0.113.7:5015", &self.remote_5015),
            ("[2001:db8:ff::7]:5015", &self.remote_5015),
            ("203.0.113.7:6005", &self.remote_6005),
        ] {
            assert_direct(&self.connect_from_app(dest, APP_USER), remote);
        }
        // Metadata endpoints and ignored CIDRs go direct.
        for dest in [
            "169.254.169.254:80",
            "169.254.170.2:80",
            "203.0.113.200:80",
            "[2001:db8:ff:1::7]:80",
            "[fd00:ec2::254]:80",
        ] {
            assert_direct(&self.connect_from_app(dest, APP_USER), &self.remote_80);
        }
        // Local traffic is untouched.
        for dest in [
            "127.0.0.1:8080",
            "198.51.100.1:8080",
            "[::1]:8080",
            "[2001:db8:100::1]:8080",
        ] {
            assert_direct(&self.connect_from_app(dest, APP_USER), &self.app_8080);
        }
        // Inbound: AppPorts go to the ingress proxy, other ports are untouched.
        for dest in [
            "198.51.100.1:9080",
            "[2001:db8:100::1]:9080",
            "198.51.100.1:9443",
        ] {
            let outcome = self.connect_from_peer(dest);
            if dest.starts_with('[') && !ipv6 {
                assert_direct(&outcome, &self.app_9080);
            } else {
                assert_redirected(&outcome, &self.ingress_proxy, addr(dest));
            }
        }
        for dest in ["198.51.100.1:8080", "[2001:db8:100::1]:8080"] {
            assert_direct(&self.connect_from_peer(dest), &self.app_8080);
        }
    }

    /// Without rules, everything goes where it was sent.
    pub fn assert_direct_traffic(&self) {
        for dest in ["203.0.113.7:80", "[2001:db8:ff::7]:80"] {
            assert_direct(&self.connect_from_app(dest, APP_USER), &self.remote_80);
        }
        assert_direct(
            &self.connect_from_app("203.0.113.7:7000", APP_USER),
            &self.remote_7000,
        );
        for dest in ["198.51.100.1:9080", "[2001:db8:100::1]:9080"] {
            assert_direct(&self.connect_from_peer(dest), &self.app_9080);
        }
    }
}
