//! Requests as the kernel receives them, per command: an nlmon device copies
//! every netlink message of the namespace to a packet socket, the real
//! ipvsadm sends each command, and the captured request must decode to the
//! change we expect (parse == expected) and equal, byte for byte, what our
//! codec emits for that change (emit == captured).

use libtest_mimic::Failed;

use crate::support::Netns;
use ipvs_manager::ipvs::codec::{
    change_request, DestAttr, IpvsAttr, IpvsMessage, IPVS_GENL_VERSION,
};
use ipvs_manager::ipvs::{text, Change};
use nix::sys::socket::{recv, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use std::os::fd::{AsRawFd, OwnedFd};

/// A packet socket on every interface of the calling thread's namespace.
fn tap() -> Result<OwnedFd, Failed> {
    Ok(socket(
        AddressFamily::Packet,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK,
        SockProtocol::EthAll,
    )?)
}

/// Generic-netlink payloads of the requests captured so far (messages with
/// NLM_F_REQUEST and a genl header), with their netlink message type.
fn drain(fd: &OwnedFd) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
        let mut msg = &buf[..n];
        while msg.len() >= 20 {
            let len = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
            if len < 20 || len > msg.len() {
                break;
            }
            let kind = u16::from_ne_bytes([msg[4], msg[5]]);
            let flags = u16::from_ne_bytes([msg[6], msg[7]]);
            if flags & 1 != 0 && kind >= 16 {
                out.push((kind, msg[16..len].to_vec()));
            }
            msg = &msg[((len + 3) & !3).min(msg.len())..];
        }
    }
    out
}

/// ipvsadm command lines, one per kind of change; our parser reads the same
/// line to get the change we compare with.
fn commands() -> Vec<&'static str> {
    vec![
        "-A -t 10.90.0.1:80 -s wrr -p 600 -M 255.255.255.0",
        "-E -t 10.90.0.1:80 -s sh -b sh-fallback,sh-port",
        "-A -u 10.90.0.2:53 -s rr -o",
        "-A -u [2001:db8:90::1]:53 -s rr -p 60 -M 64 --pe sip",
        "-A -f 5 -6 -s mh -b mh-port",
        "-a -t 10.90.0.1:80 -r 10.91.0.1:8080 -m -w 3 -x 100 -y 10",
        "-e -t 10.90.0.1:80 -r 10.91.0.1:8080 -m -w 0",
        "-a -t 10.90.0.1:80 -r 10.91.0.2:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-remcsum",
        "-a -t 10.90.0.1:80 -r [2001:db8:91::1]:80 -i -w 2 --tun-type gre --tun-csum",
        "-a -u [2001:db8:90::1]:53 -r [2001:db8:91::2]:53 -g -w 1",
        "-d -t 10.90.0.1:80 -r 10.91.0.2:80",
        "-Z -t 10.90.0.1:80",
        "-Z",
        "-D -f 5 -6",
        "--set 1000 100 30",
        "-C",
    ]
}

fn genl_payload(msg: &IpvsMessage) -> Vec<u8> {
    let mut bytes = vec![u8::from(msg.cmd), IPVS_GENL_VERSION, 0, 0];
    bytes.extend(msg.attrs_bytes());
    bytes
}

pub fn ipvsadm_requests_match_our_codec() -> Result<(), Failed> {
    let ns = Netns::load_balancer();
    ns.ip(&["link", "add", "nlmon0", "type", "nlmon"]);
    ns.ip(&["link", "set", "nlmon0", "up"]);
    ns.run(|| -> Result<(), Failed> {
        let fd = tap()?;
        for line in commands() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let change = text::parse_command(&words)?;
            let ours = change_request(&change);
            drain(&fd);
            let status = std::process::Command::new("ipvsadm")
                .args(&words)
                .status()?;
            assert!(status.success(), "ipvsadm {line} failed");
            let theirs: Vec<Vec<u8>> = drain(&fd)
                .into_iter()
                // Not the generic-netlink controller (GENL_ID_CTRL), where
                // ipvsadm resolves the family with commands of the same
                // numbers.
                .filter(|(kind, _)| *kind != 0x10)
                .map(|(_, payload)| payload)
                .filter(|p| {
                    p.first() == Some(&u8::from(ours.cmd)) && p.get(1) == Some(&IPVS_GENL_VERSION)
                })
                .collect();
            let [captured] = theirs.as_slice() else {
                return Err(format!(
                    "{line}: expected one {:?} request, captured {}: {:02x?}",
                    ours.cmd,
                    theirs.len(),
                    theirs
                )
                .into());
            };
            let decoded = IpvsMessage::decode_genl(captured)?;
            match change {
                Change::AddDest(..)
                | Change::EditDest(..)
                | Change::DelDest(..)
                | Change::DelService(_)
                | Change::Zero(Some(_)) => {
                    // ipvsadm sends a whole service nest where the kernel
                    // reads only its key (and, to delete a destination, the
                    // whole destination); the key must be ours.
                    let theirs_svc = decoded.service().unwrap_or_default();
                    let ours_svc = ours.service().unwrap_or_default();
                    assert_eq!(
                        &theirs_svc[..ours_svc.len()],
                        ours_svc,
                        "{line}: service key"
                    );
                    if let Change::DelDest(_, key) = change {
                        let theirs_dest = decoded.dest().unwrap_or_default();
                        assert!(theirs_dest.contains(&DestAttr::Port(key.port)), "{line}");
                        assert_eq!(
                            &theirs_dest[..2],
                            &ours.dest().unwrap_or_default()[..2],
                            "{line}: dest key"
                        );
                    } else {
                        assert_eq!(decoded.dest(), ours.dest(), "{line}: parse == expected");
                    }
                    if let (Some(dest), false) =
                        (ours.dest(), matches!(change, Change::DelDest(..)))
                    {
                        // The destination nest comes last: its bytes as we
                        // emit them end the captured request.
                        let nest = IpvsMessage::new(ours.cmd, vec![IpvsAttr::Dest(dest.to_vec())])
                            .attrs_bytes();
                        assert!(
                            captured.ends_with(&nest),
                            "{line}: destination nest emit == captured"
                        );
                    }
                }
                _ => {
                    assert_eq!(decoded, ours, "{line}: parse == expected");
                    assert_eq!(captured, &genl_payload(&ours), "{line}: emit == captured");
                }
            }
        }
        Ok(())
    })
}
