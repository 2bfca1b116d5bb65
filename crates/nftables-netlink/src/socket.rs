//! The NETLINK_NETFILTER socket: requests, dumps (handled message by message, so a large
//! set is never held twice), and batches with their per-message acks.

use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    ErrorBuffer, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP,
    NetlinkBuffer, ParseableParametrized,
};
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessageInner};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use super::batch::{FinishedBatch, TableFamily, serialize_into};
use super::error::NftError;

/// Receive buffer for one `recv`: dumps come in skbs of up to 32 KiB, single messages
/// (a rule, an element list) stay under 64 KiB.
const RECV_BUFFER: usize = 256 * 1024;
/// Kernel socket buffer for acks and dumps; forced when we may (CAP_NET_ADMIN).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// What a dump ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpEnd {
    Complete,
    /// `NLM_F_DUMP_INTR`: the ruleset changed while dumping; the result is not consistent.
    Interrupted,
}

/// The failure of a batch: which message, which errno.
#[derive(Debug)]
pub struct BatchRefusal {
    pub seq: u32,
    pub errno: i32,
}

pub struct NfSocket {
    socket: Socket,
    next_seq: u32,
    buffer: Vec<u8>,
}

impl NfSocket {
    pub fn open() -> Result<NfSocket, NftError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| match e.raw_os_error() {
            Some(errno @ (libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT)) => NftError::Unavailable {
                what: "netlink netfilter socket".to_owned(),
                source: io::Error::from_raw_os_error(errno),
            },
            _ => NftError::Socket {
                what: "opening the netlink netfilter socket".to_owned(),
                source: e,
            },
        })?;
        socket.bind_auto().map_err(|e| NftError::Socket {
            what: "binding the netlink socket".to_owned(),
            source: e,
        })?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| NftError::Socket {
                what: "connecting the netlink socket".to_owned(),
                source: e,
            })?;
        // Errors carry only the header of the refused message, not the whole message back.
        let _ = socket.set_cap_ack(true);
        set_buffer(
            &socket,
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            SOCKET_BUFFER,
        );
        // Sequence numbers start at a time-derived value so replies to an earlier socket
        // of this process can never be mistaken for ours.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1)
            | 1;
        Ok(NfSocket {
            socket,
            next_seq: start,
            buffer: vec![0; RECV_BUFFER],
        })
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        seq
    }

    /// The sequence number the next message will get.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Skips `count` sequence numbers (used by a batch built from [`next_seq`](Self::next_seq)).
    pub fn skip_seqs(&mut self, count: u32) {
        self.next_seq = self.next_seq.wrapping_add(count);
    }

    fn send_all(&self, bytes: &[u8], what: &str) -> Result<(), NftError> {
        let sent = self.socket.send(bytes, 0).map_err(|e| NftError::Socket {
            what: format!("sending {what}"),
            source: e,
        })?;
        if sent != bytes.len() {
            return Err(NftError::Socket {
                what: format!("sending {what}"),
                source: io::Error::other(format!("sent {sent} of {} bytes", bytes.len())),
            });
        }
        Ok(())
    }

    /// Receives one datagram and calls `each` for every netlink message in it.
    fn recv_messages(
        &mut self,
        what: &str,
        mut each: impl FnMut(ReplyHeader, Incoming<'_>) -> Result<(), NftError>,
    ) -> Result<(), NftError> {
        let received = self
            .socket
            .recv(&mut &mut self.buffer[..], 0)
            .map_err(|e| NftError::Socket {
                what: format!("receiving the reply to {what}"),
                source: e,
            })?;
        let malformed = |why: String| NftError::MalformedReply(format!("{what}: {why}"));
        let mut offset = 0;
        while offset < received {
            let bytes = &self.buffer[offset..received];
            let message =
                NetlinkBuffer::new_checked(bytes).map_err(|e| malformed(e.to_string()))?;
            let length = message.length() as usize;
            let header = ReplyHeader {
                seq: message.sequence_number(),
                flags: message.flags(),
            };
            let payload = message.payload();
            let incoming = match message.message_type() {
                NLMSG_NOOP => None,
                NLMSG_ERROR => {
                    let error =
                        ErrorBuffer::new_checked(payload).map_err(|e| malformed(e.to_string()))?;
                    Some(Incoming::Error(error.code().map_or(0, |c| -c.get())))
                }
                NLMSG_DONE => {
                    let code = payload
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    Some(Incoming::Done(-code.min(0)))
                }
                message_type => {
                    let body = payload
                        .get(NFGENMSG_LEN..)
                        .ok_or_else(|| malformed("message shorter than nfgenmsg".to_owned()))?;
                    Some(Incoming::Message {
                        nft_type: (message_type & 0xff) as u8,
                        body,
                    })
                }
            };
            if let Some(incoming) = incoming {
                each(header, incoming)?;
            }
            offset += length.div_ceil(4) * 4;
        }
        Ok(())
    }

    /// Sends a GET request (not a dump) and returns its single reply, or the errno.
    pub fn request(
        &mut self,
        family: TableFamily,
        message: NfTablesMessage,
        what: &str,
    ) -> Result<Result<NfTablesMessage, i32>, NftError> {
        let seq = self.take_seq();
        let mut bytes = Vec::new();
        serialize_into(
            &mut bytes,
            NLM_F_REQUEST,
            seq,
            NetfilterHeader::new(family.proto(), 0, 0),
            NetfilterMessageInner::NfTables(message),
        );
        self.send_all(&bytes, what)?;
        let mut answer = None;
        while answer.is_none() {
            self.recv_messages(what, |header, incoming| {
                if header.seq != seq {
                    return Ok(());
                }
                answer = Some(match incoming {
                    Incoming::Error(errno) | Incoming::Done(errno) => Err(errno),
                    Incoming::Message { nft_type, body } => Ok(parse_nftables(nft_type, body)?),
                });
                Ok(())
            })?;
        }
        Ok(answer.expect("loop ends with an answer"))
    }

    /// Dumps objects of `family` and hands each (message type, attributes) to `each`; an
    /// errno ends it as `Err(errno)`. Bodies are handed over raw so that large element
    /// lists can be decoded without building a tree of values.
    pub fn dump(
        &mut self,
        family: TableFamily,
        message: NfTablesMessage,
        what: &str,
        mut each: impl FnMut(u8, &[u8]) -> Result<(), NftError>,
    ) -> Result<Result<DumpEnd, i32>, NftError> {
        let seq = self.take_seq();
        let mut bytes = Vec::new();
        serialize_into(
            &mut bytes,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NetfilterHeader::new(family.proto(), 0, 0),
            NetfilterMessageInner::NfTables(message),
        );
        self.send_all(&bytes, what)?;
        let mut end = None;
        let mut interrupted = false;
        while end.is_none() {
            self.recv_messages(what, |header, incoming| {
                if header.seq != seq || end.is_some() {
                    return Ok(());
                }
                if header.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match incoming {
                    Incoming::Done(0) => {
                        end = Some(Ok(if interrupted {
                            DumpEnd::Interrupted
                        } else {
                            DumpEnd::Complete
                        }))
                    }
                    Incoming::Done(errno) | Incoming::Error(errno) if errno != 0 => {
                        end = Some(Err(errno))
                    }
                    Incoming::Message { nft_type, body } => each(nft_type, body)?,
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(end.expect("loop ends with an end"))
    }

    /// Sends a batch in one datagram and waits for every ack. `Ok(Err(refusal))` names the
    /// first message the kernel refused (the batch begin for a stale generation id).
    pub fn send_batch(
        &mut self,
        batch: &FinishedBatch,
    ) -> Result<Result<(), BatchRefusal>, NftError> {
        // One sendmsg must hold the whole batch: make the send buffer big enough.
        set_buffer(
            &self.socket,
            libc::SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            batch.bytes.len() + 64 * 1024,
        );
        self.send_all(&batch.bytes, "the batch")?;
        let mut pending: std::collections::HashSet<u32> =
            batch.messages.iter().map(|(seq, _)| *seq).collect();
        let mut first_error: Option<BatchRefusal> = None;
        let mut batch_refused = false;
        let in_batch = |seq: u32| {
            seq.wrapping_sub(batch.begin_seq) <= batch.end_seq.wrapping_sub(batch.begin_seq)
        };
        while !pending.is_empty() && !batch_refused {
            self.recv_messages("the batch", |header, incoming| {
                if !in_batch(header.seq) {
                    return Ok(());
                }
                if let Incoming::Error(errno) = incoming {
                    pending.remove(&header.seq);
                    if errno != 0 {
                        if header.seq == batch.begin_seq {
                            batch_refused = true;
                        }
                        let earlier = first_error.as_ref().is_none_or(|e| {
                            header.seq.wrapping_sub(batch.begin_seq)
                                < e.seq.wrapping_sub(batch.begin_seq)
                        });
                        // A refused batch begin explains everything after it.
                        if earlier || header.seq == batch.begin_seq {
                            first_error = Some(BatchRefusal {
                                seq: header.seq,
                                errno,
                            });
                        }
                    }
                }
                Ok(())
            })?;
        }
        if batch_refused {
            self.drain();
        }
        Ok(match first_error {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        })
    }

    /// Drops whatever replies are still queued (acks after a refused batch).
    fn drain(&mut self) {
        while let Ok(n) = self
            .socket
            .recv(&mut &mut self.buffer[..], libc::MSG_DONTWAIT)
        {
            if n == 0 {
                break;
            }
        }
    }
}

/// The parts of a reply header the loops look at.
#[derive(Clone, Copy)]
struct ReplyHeader {
    seq: u32,
    flags: u16,
}

/// One reply message.
enum Incoming<'a> {
    /// An ack (0) or an error (errno).
    Error(i32),
    /// The end of a dump, with an errno if it failed.
    Done(i32),
    /// An nf_tables message: its type (`NFT_MSG_*`) and attributes after the nfgenmsg.
    Message { nft_type: u8, body: &'a [u8] },
}

/// `struct nfgenmsg`: family, version, res_id.
const NFGENMSG_LEN: usize = 4;

/// Parses an nf_tables message body with netlink-packet-netfilter.
pub(crate) fn parse_nftables(nft_type: u8, body: &[u8]) -> Result<NfTablesMessage, NftError> {
    NfTablesMessage::parse_with_param(body, nft_type)
        .map_err(|e| NftError::MalformedReply(format!("nf_tables message {nft_type}: {e}")))
}

/// Sets a socket buffer size, forced past the system limit when allowed.
fn set_buffer(socket: &Socket, forced: libc::c_int, plain: libc::c_int, size: usize) {
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    for option in [forced, plain] {
        // SAFETY: setsockopt reads an int from a valid pointer for the given length.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}
