//! meshinit: programs the NAT rules that send a workload's TCP traffic through its
//! service-mesh sidecar, from the configuration users already write for AWS App Mesh.
//!
//! The pure core (`config` -> `ruleset`) does no I/O; the shell (`backend`, `netns`,
//! `privileges`, `verify`, `cni`) talks to the kernel.

pub mod backend;
pub mod cni;
pub mod commands;
pub mod config;
pub mod conntrack;
pub mod converge;
pub mod error;
pub mod explain;
pub mod netns;
pub mod netns_lock;
pub mod nftables;
pub mod privileges;
pub mod ruleset;
pub mod verify;
