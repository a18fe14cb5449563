//! The real kernel: a generic-netlink client for the IPVS family of the
//! network namespace the process (thread) is in.
//!
//! Changes are pipelined: many requests go out in one `send`, and the kernel,
//! which handles generic netlink synchronously inside `sendmsg`, has queued
//! every acknowledgement by the time `send` returns. NETLINK_CAP_ACK keeps
//! those acks small so a chunk's worth always fits in the receive buffer.

use super::codec::{self, service_key_attrs, DaemonAttr, IpvsAttr, IpvsCmd, IpvsMessage};
use super::{Change, Info, Kernel, KernelError, Reason, Timeouts};
use crate::model::{ServiceEntry, ServiceKey};
use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_ACK_TLVS,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{protocols::NETLINK_GENERIC, Socket, SocketAddr};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// Extended-ack TLV carrying the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Bytes of requests sent in one `send`. Their acks (36 bytes each with
/// NETLINK_CAP_ACK, a request being ~170 bytes) stay far below the receive
/// buffer, and the whole chunk stays below the socket's send limit.
const SEND_CHUNK: usize = 64 * 1024;
const RECV_BUFFER: usize = 1 << 20;

/// A connection to IPVS in the current network namespace.
pub struct NetlinkKernel {
    socket: Socket,
    family_id: u16,
    seq: u32,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
    /// Netlink requests sent on this socket (benchmarks count them).
    requests: u64,
}

impl NetlinkKernel {
    /// Opens a socket, resolves the IPVS family and checks that this process
    /// may use it, so that a missing module or capability is reported here
    /// and not at the first change.
    pub fn connect() -> Result<NetlinkKernel, KernelError> {
        let mut kernel = NetlinkKernel::open(0)?;
        kernel.family_id = kernel.resolve_family()?;
        kernel.info().map_err(|e| match e {
            KernelError::Query { source, .. } if source.raw_os_error() == Some(libc::EPERM) => {
                KernelError::PermissionDenied
            }
            other => other,
        })?;
        Ok(kernel)
    }

    /// A socket for a family already resolved (`family_id`, or 0 before
    /// resolution).
    fn open(family_id: u16) -> Result<NetlinkKernel, KernelError> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_cap_ack(true)?;
        socket.set_ext_ack(true)?;
        // Best effort: a larger buffer only adds headroom for big dumps.
        let _ = socket.set_rx_buf_sz(RECV_BUFFER as i32);
        Ok(NetlinkKernel {
            socket,
            family_id,
            seq: 0,
            send_buf: Vec::with_capacity(SEND_CHUNK + 4096),
            recv_buf: Vec::with_capacity(RECV_BUFFER),
            requests: 0,
        })
    }

    /// Fills in the destinations of every service. A socket runs one dump at
    /// a time and a table needs one GET_DEST dump per service, so large
    /// tables are split across a few sockets on scoped threads (which stay
    /// in this thread's network namespace).
    fn all_destinations_into(&mut self, entries: &mut [ServiceEntry]) -> Result<(), KernelError> {
        const PER_WORKER: usize = 256;
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4)
            .min(entries.len().div_ceil(PER_WORKER));
        if workers <= 1 {
            return entries
                .iter_mut()
                .try_for_each(|e| self.destinations_into(e));
        }
        let chunk = entries.len().div_ceil(workers);
        let family_id = self.family_id;
        std::thread::scope(|scope| {
            let handles: Vec<_> = entries
                .chunks_mut(chunk)
                .map(|part| {
                    scope.spawn(move || -> Result<(), KernelError> {
                        let mut worker = NetlinkKernel::open(family_id)?;
                        part.iter_mut()
                            .try_for_each(|e| worker.destinations_into(e))
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(KernelError::Io(std::io::Error::other(
                        "dump worker panicked",
                    )))
                })
            })
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn resolve_family(&mut self) -> Result<u16, KernelError> {
        let seq = self.next_seq();
        let mut genl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(codec::IPVS_GENL_NAME.to_string())],
        });
        genl.finalize();
        let mut msg = NetlinkMessage::from(genl);
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut family = None;
        loop {
            self.recv()?;
            for item in parse_replies(&self.recv_buf, seq) {
                match item? {
                    (_, RawReply::Other(bytes)) => {
                        let parsed = NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(bytes)
                            .map_err(|e| codec::DecodeError::Netlink(e.to_string()))?;
                        if let NetlinkPayload::InnerMessage(m) = parsed.payload {
                            family = m.payload.nlas.iter().find_map(|a| match a {
                                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                                _ => None,
                            });
                        }
                    }
                    (_, RawReply::Ack { errno: 0, .. }) => {
                        return family.ok_or(KernelError::Unavailable);
                    }
                    (_, RawReply::Ack { errno, .. }) if errno == libc::ENOENT => {
                        return Err(KernelError::Unavailable)
                    }
                    (_, RawReply::Ack { errno, .. }) => {
                        return Err(KernelError::Io(std::io::Error::from_raw_os_error(errno)))
                    }
                    (_, RawReply::Done { .. }) => {}
                }
            }
        }
    }

    /// Netlink requests sent so far on this socket (not counting those of
    /// the helper sockets of parallel destination dumps).
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Appends one request to the send buffer.
    fn push_request(&mut self, msg: IpvsMessage, flags: u16, seq: u32) {
        self.requests += 1;
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(self.family_id);
        let mut nl = NetlinkMessage::from(genl);
        nl.header = {
            let mut h = NetlinkHeader::default();
            h.flags = flags;
            h.sequence_number = seq;
            h
        };
        nl.finalize();
        let start = self.send_buf.len();
        self.send_buf.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut self.send_buf[start..]);
    }

    fn flush_send(&mut self) -> Result<(), std::io::Error> {
        let res = self.socket.send(&self.send_buf, 0);
        self.send_buf.clear();
        res.map(|_| ())
    }

    /// Receives one datagram into `recv_buf`.
    fn recv(&mut self) -> Result<(), std::io::Error> {
        self.recv_buf.clear();
        let n = self.socket.recv(&mut self.recv_buf, 0)?;
        if n > self.recv_buf.len() {
            return Err(std::io::Error::other("netlink datagram truncated"));
        }
        Ok(())
    }

    /// Like [`recv`](Self::recv) but returns `Ok(false)` when nothing is
    /// queued.
    fn try_recv(&mut self) -> Result<bool, std::io::Error> {
        self.recv_buf.clear();
        match self.socket.recv(&mut self.recv_buf, libc::MSG_DONTWAIT) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs a dump request and returns every message of the reply.
    fn dump(
        &mut self,
        msg: IpvsMessage,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<IpvsMessage>, KernelError> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_DUMP, what)
    }

    /// Sends one request and collects its reply messages until the final ack
    /// or NLMSG_DONE.
    fn exchange(
        &mut self,
        msg: IpvsMessage,
        flags: u16,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<IpvsMessage>, KernelError> {
        self.exchange_raw(msg, flags, what)?
            .iter()
            .map(|payload| IpvsMessage::decode_genl(payload).map_err(KernelError::from))
            .collect()
    }

    /// Like `exchange`, but returns each reply's generic-netlink payload
    /// (4-byte genl header and attributes) as the kernel sent it. Used to
    /// capture kernel bytes for the codec's tests.
    fn exchange_raw(
        &mut self,
        msg: IpvsMessage,
        flags: u16,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<Vec<u8>>, KernelError> {
        let seq = self.next_seq();
        self.send_buf.clear();
        self.push_request(msg, flags, seq);
        self.flush_send()?;
        let mut out = Vec::new();
        loop {
            self.recv()?;
            for item in parse_replies(&self.recv_buf, seq) {
                match item? {
                    (_, RawReply::Other(bytes)) => {
                        let nl = NetlinkBuffer::new_checked(bytes)
                            .map_err(|e| codec::DecodeError::Netlink(e.to_string()))?;
                        if nl.message_type() == self.family_id {
                            out.push(nl.payload().to_vec());
                        }
                    }
                    (_, RawReply::Ack { errno: 0, .. }) | (_, RawReply::Done { errno: 0 }) => {
                        return Ok(out)
                    }
                    (_, RawReply::Ack { errno, .. }) | (_, RawReply::Done { errno }) => {
                        return Err(KernelError::Query {
                            what: what(),
                            source: std::io::Error::from_raw_os_error(errno),
                        })
                    }
                }
            }
        }
    }

    /// Sends `msg` (as a dump request when `dump`) and returns the raw
    /// generic-netlink payloads of the kernel's reply.
    pub fn capture(&mut self, msg: IpvsMessage, dump: bool) -> Result<Vec<Vec<u8>>, KernelError> {
        let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
        self.exchange_raw(msg, flags, &|| "capture a reply".to_string())
    }

    /// The connection-sync daemons running in this namespace, as attribute
    /// lists (`ipvsadm --list-daemon`).
    pub fn daemons(&mut self) -> Result<Vec<Vec<DaemonAttr>>, KernelError> {
        let msgs = self.dump(IpvsMessage::new(IpvsCmd::GetDaemon, vec![]), &|| {
            "list sync daemons".to_string()
        })?;
        Ok(msgs
            .into_iter()
            .flat_map(|m| m.attrs)
            .filter_map(|a| match a {
                IpvsAttr::Daemon(d) => Some(d),
                _ => None,
            })
            .collect())
    }

    /// Starts a connection-sync daemon (`ipvsadm --start-daemon`).
    pub fn start_daemon(&mut self, attrs: Vec<DaemonAttr>) -> Result<(), KernelError> {
        let msg = IpvsMessage::new(IpvsCmd::NewDaemon, vec![IpvsAttr::Daemon(attrs)]);
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK, &|| {
            "start sync daemon".to_string()
        })
        .map(|_| ())
    }

    /// Stops the daemon in `state` (master or backup).
    pub fn stop_daemon(&mut self, state: u32) -> Result<(), KernelError> {
        let msg = IpvsMessage::new(
            IpvsCmd::DelDaemon,
            vec![IpvsAttr::Daemon(vec![DaemonAttr::State(state)])],
        );
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK, &|| {
            "stop sync daemon".to_string()
        })
        .map(|_| ())
    }

    fn destinations_into(&mut self, entry: &mut ServiceEntry) -> Result<(), KernelError> {
        let key = entry.service.key;
        let msg = IpvsMessage::new(
            IpvsCmd::GetDest,
            vec![IpvsAttr::Service(service_key_attrs(&key))],
        );
        let family = key.family();
        for m in self.dump(msg, &|| format!("list destinations of service {key}"))? {
            if let Some(d) = m.dest() {
                entry.destinations.push(codec::dest_entry(d, family)?);
            }
        }
        Ok(())
    }

    /// Sends `changes[range]` in one chunk and records one result each.
    fn send_chunk(
        &mut self,
        changes: &[Change],
        first_seq: u32,
        results: &mut [Option<Result<(), KernelError>>],
    ) -> Result<(), std::io::Error> {
        self.flush_send()?;
        let mut pending = changes.len();
        // Every ack is already queued (see the module comment); stop when the
        // queue is empty even if some are missing.
        while pending > 0 && self.try_recv()? {
            for item in parse_replies(&self.recv_buf, 0) {
                let Ok((seq, RawReply::Ack { errno, text })) = item else {
                    continue;
                };
                let idx = seq.wrapping_sub(first_seq) as usize;
                let Some(slot) = results.get_mut(idx) else {
                    continue;
                };
                if slot.is_some() {
                    continue;
                }
                pending -= 1;
                *slot = Some(if errno == 0 {
                    Ok(())
                } else {
                    Err(KernelError::Rejected {
                        change: changes[idx].to_string(),
                        reason: Reason::from_errno(errno, Some(&changes[idx])),
                        detail: text,
                    })
                });
            }
        }
        Ok(())
    }
}

/// A reply message before IPVS decoding.
enum RawReply<'a> {
    /// Any other message, header included.
    Other(&'a [u8]),
    Ack {
        errno: i32,
        text: Option<String>,
    },
    Done {
        errno: i32,
    },
}

/// Splits a datagram into its netlink messages. With `seq != 0`, messages of
/// other sequence numbers (stale answers) are skipped.
fn parse_replies(
    buf: &[u8],
    seq: u32,
) -> impl Iterator<Item = Result<(u32, RawReply<'_>), KernelError>> {
    let mut off = 0usize;
    std::iter::from_fn(move || loop {
        let rest = buf.get(off..).filter(|r| !r.is_empty())?;
        let nl = match NetlinkBuffer::new_checked(rest) {
            Ok(nl) => nl,
            Err(e) => {
                off = buf.len();
                return Some(Err(codec::DecodeError::Netlink(e.to_string()).into()));
            }
        };
        let len = nl.length() as usize;
        off += (len + 3) & !3;
        let msg_seq = nl.sequence_number();
        if seq != 0 && msg_seq != seq {
            continue;
        }
        let bytes = &rest[..len];
        let payload = nl.payload();
        let reply = match nl.message_type() {
            NLMSG_ERROR => match payload.get(..4) {
                Some(code) => RawReply::Ack {
                    errno: -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]),
                    text: ext_ack_text(nl.flags(), payload),
                },
                None => {
                    return Some(Err(codec::DecodeError::Netlink(
                        "truncated error message".to_string(),
                    )
                    .into()))
                }
            },
            NLMSG_DONE => RawReply::Done {
                errno: payload
                    .get(..4)
                    .map(|c| -i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .unwrap_or(0),
            },
            _ => RawReply::Other(bytes),
        };
        return Some(Ok((msg_seq, reply)));
    })
}

/// The NLMSGERR_ATTR_MSG text of an extended ack, if any. The TLVs follow
/// the echoed request header (only the header, thanks to NETLINK_CAP_ACK).
fn ext_ack_text(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = payload.get(4..)?;
    let echoed_len = NetlinkBuffer::new_checked(echoed).ok()?.length() as usize;
    let tlvs = payload.get(4 + ((echoed_len.min(16) + 3) & !3)..)?;
    netlink_packet_core::NlasIterator::new(tlvs)
        .filter_map(Result::ok)
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .map(|nla| {
            let v = nla.value();
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        })
}

impl Kernel for NetlinkKernel {
    fn services(&mut self) -> Result<Vec<ServiceEntry>, KernelError> {
        let msgs = self.dump(IpvsMessage::new(IpvsCmd::GetService, vec![]), &|| {
            "list services".to_string()
        })?;
        let mut entries = msgs
            .iter()
            .filter_map(|m| m.service())
            .map(codec::service_entry)
            .collect::<Result<Vec<_>, _>>()?;
        // The kernel resumes a multi-part dump by position in its table of
        // every namespace's services, so services added or removed in other
        // namespaces meanwhile can make one appear twice: keep the first.
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        entries.retain(|e| seen.insert(e.service.key));
        self.all_destinations_into(&mut entries)?;
        Ok(entries)
    }

    fn service(&mut self, key: &ServiceKey) -> Result<Option<ServiceEntry>, KernelError> {
        let msg = IpvsMessage::new(
            IpvsCmd::GetService,
            vec![IpvsAttr::Service(service_key_attrs(key))],
        );
        let reply = match self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK, &|| {
            format!("get service {key}")
        }) {
            Ok(reply) => reply,
            Err(KernelError::Query { source, .. })
                if source.raw_os_error() == Some(libc::ESRCH) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let Some(attrs) = reply.iter().find_map(|m| m.service()) else {
            return Ok(None);
        };
        let mut entry = codec::service_entry(attrs)?;
        self.destinations_into(&mut entry)?;
        Ok(Some(entry))
    }

    fn apply_batch(&mut self, changes: &[Change]) -> Vec<Result<(), KernelError>> {
        let mut results: Vec<Option<Result<(), KernelError>>> = Vec::with_capacity(changes.len());
        results.resize_with(changes.len(), || None);
        let mut start = 0;
        while start < changes.len() {
            self.send_buf.clear();
            let first_seq = self.seq.wrapping_add(1);
            let mut end = start;
            while end < changes.len() && self.send_buf.len() < SEND_CHUNK {
                let seq = self.next_seq();
                self.push_request(
                    codec::change_request(&changes[end]),
                    NLM_F_REQUEST | NLM_F_ACK,
                    seq,
                );
                end += 1;
            }
            if let Err(e) =
                self.send_chunk(&changes[start..end], first_seq, &mut results[start..end])
            {
                for (slot, change) in results[start..end].iter_mut().zip(&changes[start..end]) {
                    if slot.is_none() {
                        *slot = Some(Err(KernelError::Query {
                            what: change.to_string(),
                            source: std::io::Error::new(e.kind(), e.to_string()),
                        }));
                    }
                }
            }
            start = end;
        }
        results
            .into_iter()
            .zip(changes)
            .map(|(r, c)| {
                r.unwrap_or_else(|| {
                    Err(KernelError::NoAnswer {
                        change: c.to_string(),
                    })
                })
            })
            .collect()
    }

    fn info(&mut self) -> Result<Info, KernelError> {
        let reply = self.exchange(
            IpvsMessage::new(IpvsCmd::GetInfo, vec![]),
            NLM_F_REQUEST | NLM_F_ACK,
            &|| "get IPVS info".to_string(),
        )?;
        let mut info = Info {
            version: 0,
            conn_tab_size: 0,
        };
        for attr in reply.iter().flat_map(|m| &m.attrs) {
            match attr {
                IpvsAttr::Version(v) => info.version = *v,
                IpvsAttr::ConnTabSize(v) => info.conn_tab_size = *v,
                _ => {}
            }
        }
        Ok(info)
    }

    fn timeouts(&mut self) -> Result<Timeouts, KernelError> {
        let reply = self.exchange(
            IpvsMessage::new(IpvsCmd::GetConfig, vec![]),
            NLM_F_REQUEST | NLM_F_ACK,
            &|| "get IPVS timeouts".to_string(),
        )?;
        let mut t = Timeouts::default();
        for attr in reply.iter().flat_map(|m| &m.attrs) {
            match attr {
                IpvsAttr::TimeoutTcp(v) => t.tcp = *v,
                IpvsAttr::TimeoutTcpFin(v) => t.tcp_fin = *v,
                IpvsAttr::TimeoutUdp(v) => t.udp = *v,
                _ => {}
            }
        }
        Ok(t)
    }
}
