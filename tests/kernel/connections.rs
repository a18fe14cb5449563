//! `ipvs-manager -Lnc` against the real `ipvsadm -Lnc`, on a director's
//! connection table filled by real traffic: established and closed TCP
//! connections through NAT, a persistence template (of a service whose
//! netmask has holes: the template's client is the address & mask, 10.0.0.0
//! for 10.79.0.10 & 255.0.255.0), and a UDP entry.

use std::net::{SocketAddr, UdpSocket};

use libtest_mimic::Failed;

use crate::support::traffic::get;
use crate::support::{Backend, Held, Netns, Site};

const BINARY: &str = env!("CARGO_BIN_EXE_ipvs-manager");

/// Every listing of the connection table equals ipvsadm's, byte for byte.
pub fn lnc_matches_ipvsadm() -> Result<(), Failed> {
    let site = Site::new(2, 0);
    let _backends: Vec<Backend> = (0..2)
        .map(|i| {
            let addr = SocketAddr::from((Site::backend_addr(i), 8080));
            Backend::start(&site.backends[i], &format!("backend{}", i + 1), addr)
        })
        .collect();
    let lb = site.director_ns();
    lb.ipvsadm_input(
        &["-R"],
        "-A -t 10.80.0.1:80 -s rr\n\
         -a -t 10.80.0.1:80 -r 10.78.0.11:8080 -m\n\
         -a -t 10.80.0.1:80 -r 10.78.0.12:8080 -m\n\
         -A -t 10.80.0.2:80 -s rr -p 600 -M 255.0.255.0\n\
         -a -t 10.80.0.2:80 -r 10.78.0.11:8080 -m\n\
         -A -u 10.80.0.1:53 -s rr\n\
         -a -u 10.80.0.1:53 -r 10.78.0.12:53 -m\n",
    );
    let vip: SocketAddr = "10.80.0.1:80".parse()?;
    let persistent: SocketAddr = "10.80.0.2:80".parse()?;
    let held = [
        Held::open(&site.client, vip)?,
        Held::open(&site.client, vip)?,
    ];
    // A connection that has ended: its entry lingers (FIN_WAIT, TIME_WAIT).
    get(&site.client, vip)?;
    let sticky = Held::open(&site.client, persistent)?;
    // A datagram makes a UDP entry (the backend need not answer).
    site.client.run(|| -> std::io::Result<()> {
        let socket = UdpSocket::bind("10.79.0.10:0")?;
        socket.send_to(b"query", "10.80.0.1:53")?;
        Ok(())
    })?;

    let listing = same_as_ipvsadm(lb, &["-Lnc"], &["-Lnc"])?;
    let entries: Vec<&str> = listing.lines().skip(2).collect();
    assert!(entries.len() >= 6, "expected 6 entries or more:\n{listing}");
    for state in ["ESTABLISHED", "TIME_WAIT", "UDP"] {
        assert!(listing.contains(state), "no {state} entry:\n{listing}");
    }
    // The persistence template: the kernel keys it by client & netmask,
    // holes and all (10.79.0.10 & 255.0.255.0 = 10.0.0.0, port 0), so
    // 10.1.0.7 would share it.
    assert!(
        entries.iter().any(|e| e.starts_with("TCP")
            && e.contains(" 10.0.0.0:0         10.80.0.2:80       10.78.0.11:8080")),
        "no template for 10.0.0.0:\n{listing}"
    );
    // Always numeric: -Lc is -Lnc here (ipvsadm -Lc would resolve names).
    same_as_ipvsadm(lb, &["-Lc"], &["-Lnc"])?;
    same_as_ipvsadm(lb, &["--list", "--connection", "-n"], &["-Lnc"])?;
    same_as_ipvsadm(
        lb,
        &["-Lnc", "--persistent-conn"],
        &["-Lnc", "--persistent-conn"],
    )?;
    // Another namespace's table is its own: empty, as ipvsadm sees it.
    let other = Netns::new();
    let empty = same_as_ipvsadm(&other, &["-Lnc"], &["-Lnc"])?;
    assert_eq!(empty.lines().count(), 2, "{empty}");

    for h in held {
        h.close()?;
    }
    sticky.close()?;
    Ok(())
}

/// `ipvs-manager ours` in `ns`, checked equal to `ipvsadm theirs`, with
/// ours read before and after ipvsadm's. Entries count down their expiry
/// every second, and a loaded host can take seconds for three reads: the
/// listings must be equal byte for byte but for the expiry, which must be
/// ipvsadm's or fall between our two reads (equal when the table held
/// still, as it mostly does).
fn same_as_ipvsadm(ns: &Netns, ours: &[&str], theirs: &[&str]) -> Result<String, Failed> {
    let mut last = String::new();
    for _ in 0..20 {
        let before = ipvs_manager(ns, ours)?;
        let oracle = ns.ipvsadm(theirs);
        let after = ipvs_manager(ns, ours)?;
        if before == oracle {
            return Ok(before);
        }
        let lines = |text: &str| text.lines().map(expiry).collect::<Option<Vec<_>>>();
        match (lines(&before), lines(&oracle), lines(&after)) {
            (Some(b), Some(o), Some(a)) if b.len() == o.len() && o.len() == a.len() => {
                let bracketed = b
                    .iter()
                    .zip(&o)
                    .zip(&a)
                    .all(|((b, o), a)| b.0 == o.0 && o.0 == a.0 && b.1 >= o.1 && o.1 >= a.1);
                if bracketed {
                    return Ok(before);
                }
                if before == after {
                    return Err(format!(
                        "ipvs-manager {ours:?} differs from ipvsadm {theirs:?}:\n\
                         {before}---\n{oracle}"
                    )
                    .into());
                }
            }
            // An entry came or went between the reads: read again.
            _ => {}
        }
        last = format!("{before}---\n{oracle}---\n{after}");
    }
    Err(format!("no three reads agreed:\n{last}").into())
}

/// A line with its expiry (`MM:SS`, the second field) cut out, and the
/// expiry in seconds (0 for the title lines, which have none).
fn expiry(line: &str) -> Option<(String, u32)> {
    let Some((protocol, rest)) = line.split_once(' ') else {
        return Some((line.to_string(), 0));
    };
    let (field, tail) = rest.split_at(rest.find(' ').unwrap_or(rest.len()));
    match field.split_once(':') {
        Some((minutes, seconds)) => {
            let secs = minutes.parse::<u32>().ok()? * 60 + seconds.parse::<u32>().ok()?;
            Some((format!("{protocol} {tail}"), secs))
        }
        None => Some((line.to_string(), 0)),
    }
}

fn ipvs_manager(ns: &Netns, args: &[&str]) -> Result<String, Failed> {
    let out = ns
        .cmd(BINARY)
        .args(args)
        .env("IPVS_MANAGER_SERVER", "127.0.0.1:9")
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "ipvs-manager {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}
