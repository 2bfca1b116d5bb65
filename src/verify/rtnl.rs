//! The few rtnetlink requests verify's temporary network needs (policy rules, routes,
//! links), each sent and acknowledged on its own.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buffer: Vec<u8>,
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl {
            socket,
            seq: 1,
            buffer: vec![0; 64 * 1024],
        })
    }

    /// Creates something (fails with EEXIST if it is there).
    pub fn create(&mut self, message: RouteNetlinkMessage) -> io::Result<()> {
        self.request(message, NLM_F_CREATE | NLM_F_EXCL)
    }

    /// Changes something that exists.
    pub fn change(&mut self, message: RouteNetlinkMessage) -> io::Result<()> {
        self.request(message, 0)
    }

    /// Deletes something; `Ok(false)` when it was not there.
    pub fn delete(&mut self, message: RouteNetlinkMessage) -> io::Result<bool> {
        match self.request(message, 0) {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ESRCH | libc::ENODEV | libc::EADDRNOTAVAIL)
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = seq;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        loop {
            let received = self.socket.recv(&mut &mut self.buffer[..], 0)?;
            let mut offset = 0;
            while offset < received {
                let bytes = &self.buffer[offset..received];
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|e| io::Error::other(format!("malformed rtnetlink reply: {e}")))?;
                let length = reply.header.length as usize;
                offset += length.max(16).div_ceil(4) * 4;
                if reply.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(error) = reply.payload {
                    return match error.code {
                        None => Ok(()),
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                    };
                }
            }
        }
    }
}
