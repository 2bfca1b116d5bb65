//! What can go wrong talking nf_tables, typed so the backend can map each case to an exit
//! code and a clear message.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The kernel has no nf_tables (or no NAT in nf_tables): another backend is needed.
    #[error("nf_tables is not available in this kernel: {what} ({source})")]
    Unavailable { what: String, source: io::Error },

    #[error(
        "permission denied talking to nf_tables (needs CAP_NET_ADMIN in the namespace): {what}"
    )]
    PermissionDenied { what: String },

    /// The kernel refused one message of a batch (or a request).
    #[error("the kernel refused {message}: {source}")]
    Refused { message: String, source: io::Error },

    /// Another writer changed the ruleset between our read and our commit, every time
    /// until the time allowed (`--lock-timeout`) was spent.
    #[error(
        "another program kept changing the nf_tables ruleset of this namespace (a busy \
         firewall daemon or kube-proxy?): every one of {attempts} attempts over {:.1} s was \
         overtaken by its commits, so nothing was changed; run again, or give more time with \
         --lock-timeout",
        waited.as_secs_f64()
    )]
    GenerationChanged {
        attempts: u32,
        waited: std::time::Duration,
    },

    /// The table holds something meshinit does not model (and so never wrote): a set of
    /// another key type, a named object, an element comment.
    #[error("the table holds what meshinit does not model: {0}")]
    Unmodelled(String),

    /// The table was created with `flags owner` by another process: the kernel lets only
    /// that process's socket change it, whatever our privileges.
    #[error("{}", owned_message(table, *owner))]
    OwnedByAnother { table: String, owner: Option<u32> },

    #[error("malformed nf_tables reply: {0}")]
    MalformedReply(String),

    #[error("netlink socket error while {what}: {source}")]
    Socket { what: String, source: io::Error },
}

impl NftError {
    /// Maps an errno for `what` (a message description) to the right variant.
    pub(crate) fn from_errno(what: &str, errno: i32, creating_nat_chain_or_rule: bool) -> NftError {
        let source = io::Error::from_raw_os_error(errno);
        match errno {
            libc::EPERM | libc::EACCES => NftError::PermissionDenied {
                what: what.to_owned(),
            },
            libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EOPNOTSUPP => {
                NftError::Unavailable {
                    what: what.to_owned(),
                    source,
                }
            }
            // ENOENT on a NAT chain or a rule of our own self-consistent batch: the chain
            // type or an expression (nat, fib, redir) is missing from the kernel.
            libc::ENOENT if creating_nat_chain_or_rule => NftError::Unavailable {
                what: format!(
                    "{what}: the kernel lacks nf_tables NAT (nft_chain_nat, nft_redir or \
                     nft_fib); use an iptables backend or load those modules"
                ),
                source,
            },
            _ => NftError::Refused {
                message: what.to_owned(),
                source,
            },
        }
    }
}

/// Who owns a table with `flags owner`: the kernel reports the owning socket's netlink port
/// id, which for a process's first netlink socket is its pid.
fn owned_message(table: &str, owner: Option<u32>) -> String {
    let who = match owner {
        Some(portid) => {
            let command = std::fs::read_to_string(format!("/proc/{portid}/comm"))
                .map(|c| format!(", `{}`", c.trim()))
                .unwrap_or_default();
            format!(
                "another process (netlink port id {portid}: usually its pid{command}, as this \
                 pid namespace sees it)"
            )
        }
        None => "another process".to_owned(),
    };
    format!(
        "table {table} is owned by {who} (created with `flags owner`): the kernel lets only \
         that process change or delete it, whatever meshinit's privileges; stop that \
         process (the table goes with it) and run again"
    )
}
