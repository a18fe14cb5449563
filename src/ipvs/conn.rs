//! The kernel's IPVS connection table, read from `/proc/net/ip_vs_conn` as
//! ipvsadm reads it for `-Lc` (the IPVS generic-netlink family has no
//! connection dump, so ipvsadm 1.31 reads this file too). The file belongs
//! to the network namespace of the process that opens it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where the kernel shows the connection table.
pub const PROC_FILE: &str = "/proc/net/ip_vs_conn";

/// An address and port of a connection entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

/// One entry of the connection table (a connection, or a persistence
/// template: state `NONE`, the client masked by the service's netmask).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `TCP`, `UDP`, `SCTP`… as the kernel names it.
    pub protocol: String,
    /// The client.
    pub source: Endpoint,
    /// The address and port the client asked for.
    pub virtual_addr: Endpoint,
    /// The real server.
    pub destination: Endpoint,
    /// The protocol state as IPVS tracks it (`ESTABLISHED`, `NONE`…).
    pub state: String,
    /// Seconds until the entry expires.
    pub expires: u32,
    /// The persistence engine's name and data (`sip` and the Call-ID), when
    /// the entry has them.
    pub engine: Option<(String, String)>,
}

/// Why the table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error(
        "IPVS is not available in this kernel ({PROC_FILE} is missing): load it with \
         `modprobe ip_vs`, or use a kernel built with CONFIG_IP_VS"
    )]
    Unavailable,
    #[error("cannot read {PROC_FILE}")]
    Read(#[source] std::io::Error),
    #[error("{PROC_FILE} line {line}: {problem}: {text:?}")]
    Malformed {
        line: usize,
        problem: &'static str,
        text: String,
    },
}

/// This network namespace's connection table.
pub fn read() -> Result<Vec<Connection>, ConnError> {
    let text = std::fs::read_to_string(PROC_FILE).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ConnError::Unavailable,
        _ => ConnError::Read(e),
    })?;
    parse(&text)
}

/// The entries of the file's text: a title line, then one entry a line,
/// `PRO FROMIP FPRT TOIP TPRT DESTIP DPRT STATE EXPIRES [PENAME PEDATA]`,
/// IPv4 addresses as 8 hex digits, IPv6 ones written out, ports in hex.
pub fn parse(text: &str) -> Result<Vec<Connection>, ConnError> {
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| entry(line).map_err(|problem| malformed(i + 1, problem, line)))
        .collect()
}

fn malformed(line: usize, problem: &'static str, text: &str) -> ConnError {
    ConnError::Malformed {
        line,
        problem,
        text: text.chars().take(200).collect(),
    }
}

fn entry(line: &str) -> Result<Connection, &'static str> {
    let mut fields = line.split_whitespace();
    let mut next = |what| fields.next().ok_or(what);
    let protocol = next("no protocol")?.to_string();
    let source = endpoint(next("no client address")?, next("no client port")?)?;
    let virtual_addr = endpoint(next("no virtual address")?, next("no virtual port")?)?;
    let destination = endpoint(
        next("no destination address")?,
        next("no destination port")?,
    )?;
    let state = next("no state")?.to_string();
    let expires = next("no expiry")?
        .parse::<u32>()
        .map_err(|_| "the expiry is not a number of seconds")?;
    let engine = match (fields.next(), fields.next()) {
        (Some(name), Some(data)) => Some((name.to_string(), data.to_string())),
        _ => None,
    };
    Ok(Connection {
        protocol,
        source,
        virtual_addr,
        destination,
        state,
        expires,
        engine,
    })
}

/// An address as the kernel writes it (8 hex digits for IPv4, `%pI6` for
/// IPv6) and a port in hex.
fn endpoint(addr: &str, port: &str) -> Result<Endpoint, &'static str> {
    let addr = if addr.contains(':') {
        IpAddr::V6(
            addr.parse::<Ipv6Addr>()
                .map_err(|_| "an address is neither hex IPv4 nor IPv6")?,
        )
    } else {
        match u32::from_str_radix(addr, 16) {
            Ok(bits) => IpAddr::V4(Ipv4Addr::from(bits)),
            // Not what 6.1 writes, but what ipvsadm would take too.
            Err(_) => IpAddr::V4(
                addr.parse::<Ipv4Addr>()
                    .map_err(|_| "an address is neither hex IPv4 nor IPv6")?,
            ),
        }
    };
    let port = u16::from_str_radix(port, 16).map_err(|_| "a port is not 4 hex digits")?;
    Ok(Endpoint { addr, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As 6.1's `ip_vs_conn_seq_show` writes it: a NAT connection, a
    /// persistence template, an IPv6 one, and a SIP one with its engine.
    const TABLE: &str = "\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A4F000A 9C40 0A500001 0050 0A4E000B 1F90 ESTABLISHED     899
TCP 0A000000 0000 0A500001 0050 0A4E000B 1F90 NONE            359
TCP 2001:0db8:0000:0000:0000:0000:0000:000a C350 2001:0db8:0000:0000:0000:0000:0000:0001 0050 2001:0db8:0000:0000:0000:0000:0000:000b 0050 SYN_RECV         59
UDP 0A4F000A 13C4 0A500001 13C4 0A4E000B 13C4 UDP             299 sip abc@host
";

    #[test]
    fn the_kernel_s_lines_parse() {
        let conns = parse(TABLE).unwrap();
        assert_eq!(conns.len(), 4);
        let first = &conns[0];
        assert_eq!(first.protocol, "TCP");
        assert_eq!(
            first.source,
            Endpoint {
                addr: "10.79.0.10".parse().unwrap(),
                port: 40000
            }
        );
        assert_eq!(first.virtual_addr.port, 80);
        assert_eq!(
            first.destination.addr,
            "10.78.0.11".parse::<IpAddr>().unwrap()
        );
        assert_eq!(first.destination.port, 8080);
        assert_eq!(first.state, "ESTABLISHED");
        assert_eq!(first.expires, 899);
        assert_eq!(first.engine, None);
        assert_eq!(conns[1].state, "NONE");
        assert_eq!(
            conns[2].source.addr,
            "2001:db8::a".parse::<IpAddr>().unwrap()
        );
        assert_eq!(conns[2].source.port, 50000);
        assert_eq!(
            conns[3].engine,
            Some(("sip".to_string(), "abc@host".to_string()))
        );
    }

    #[test]
    fn an_empty_table_is_its_title() {
        assert_eq!(parse(TABLE.lines().next().unwrap()).unwrap(), vec![]);
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn a_bad_line_is_named_never_a_panic() {
        for bad in [
            "TCP 0A4F000A",
            "TCP 0A4F000A 9C40 0A500001 0050 0A4E000B 1F90 ESTABLISHED soon",
            "TCP zz 9C40 0A500001 0050 0A4E000B 1F90 ESTABLISHED 1",
            "TCP 0A4F000A 10000 0A500001 0050 0A4E000B 1F90 ESTABLISHED 1",
            "TCP ::g 9C40 0A500001 0050 0A4E000B 1F90 ESTABLISHED 1",
        ] {
            let text = format!("title\n{bad}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{PROC_FILE} line 2: ")), "{err}");
        }
    }
}
