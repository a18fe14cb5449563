//! `ipvsadm -Lnc`, byte for byte: the connection table as ipvsadm 1.31's
//! `list_conn` and `print_conn` print it (always numeric, as every listing
//! here). C's `printf` conversions are spelled out next to each line.

use super::print::addr_port;
use crate::ipvs::conn::Connection;
use std::fmt::Write;

/// The listing of `connections` in the file's order (ipvsadm does not sort
/// it); `persistent_conn` (`--persistent-conn`) adds the persistence
/// engine's columns, shown on the entries that have an engine.
pub fn list_connections(connections: &[Connection], persistent_conn: bool) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if persistent_conn {
        // "pro expire %-11s %-18s %-18s %-18s %-16s %s\n"
        out.push_str(
            "pro expire state       source             virtual            destination        \
             pe name          pe_data\n",
        );
    } else {
        // "pro expire %-11s %-18s %-18s %s\n"
        out.push_str("pro expire state       source             virtual            destination\n");
    }
    for c in connections {
        // "%02d:%02d"
        let expire = format!("{:02}:{:02}", c.expires / 60, c.expires % 60);
        let source = addr_port(&c.source.addr, c.source.port);
        let virtual_addr = addr_port(&c.virtual_addr.addr, c.virtual_addr.port);
        let destination = addr_port(&c.destination.addr, c.destination.port);
        let _ = match (&c.engine, persistent_conn) {
            // "%-3s %-6s %-11s %-18s %-18s %-16s %-18s %s\n"
            (Some((name, data)), true) => writeln!(
                out,
                "{:<3} {expire:<6} {:<11} {source:<18} {virtual_addr:<18} {destination:<16} \
                 {name:<18} {data}",
                c.protocol, c.state
            ),
            // "%-3s %-6s %-11s %-18s %-18s %s\n"
            _ => writeln!(
                out,
                "{:<3} {expire:<6} {:<11} {source:<18} {virtual_addr:<18} {destination}",
                c.protocol, c.state
            ),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipvs::conn::parse;

    const TABLE: &str = "\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A4F000A 9C40 0A500001 0050 0A4E000B 1F90 ESTABLISHED     899
TCP 0A000000 0000 0A500001 0050 0A4E000B 1F90 NONE           3599
TCP 2001:0db8:0000:0000:0000:0000:0000:000a C350 2001:0db8:0000:0000:0000:0000:0000:0001 0050 2001:0db8:0000:0000:0000:0000:0000:000b 0050 SYN_RECV          9
UDP 0A4F000A 13C4 0A500001 13C4 0A4E000B 13C4 UDP             299 sip abc@host
";

    #[test]
    fn lines_as_ipvsadm_prints_them() {
        let conns = parse(TABLE).unwrap();
        assert_eq!(
            list_connections(&conns, false),
            "IPVS connection entries\n\
             pro expire state       source             virtual            destination\n\
             TCP 14:59  ESTABLISHED 10.79.0.10:40000   10.80.0.1:80       10.78.0.11:8080\n\
             TCP 59:59  NONE        10.0.0.0:0         10.80.0.1:80       10.78.0.11:8080\n\
             TCP 00:09  SYN_RECV    [2001:db8::a]:50000 [2001:db8::1]:80   [2001:db8::b]:80\n\
             UDP 04:59  UDP         10.79.0.10:5060    10.80.0.1:5060     10.78.0.11:5060\n"
        );
    }

    #[test]
    fn persistent_conn_adds_the_engine_columns() {
        let conns = parse(TABLE).unwrap();
        let listing = list_connections(&conns, true);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(
            lines[1],
            "pro expire state       source             virtual            destination        \
             pe name          pe_data"
        );
        // Entries without an engine keep the short layout, as in ipvsadm.
        assert_eq!(
            lines[2],
            "TCP 14:59  ESTABLISHED 10.79.0.10:40000   10.80.0.1:80       10.78.0.11:8080"
        );
        assert_eq!(
            lines[5],
            "UDP 04:59  UDP         10.79.0.10:5060    10.80.0.1:5060     10.78.0.11:5060  \
             sip                abc@host"
        );
    }

    #[test]
    fn minutes_go_past_99() {
        let mut conns = parse(TABLE).unwrap();
        conns.truncate(1);
        conns[0].expires = 100 * 60 + 5;
        assert!(list_connections(&conns, false).contains("TCP 100:05 ESTABLISHED"));
    }
}
