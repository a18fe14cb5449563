//! The flat network of `ANNOUNCE=l2`, shared by the kernel trial
//! (tests/kernel/l2.rs) and the failover benchmark:
//!
//! ```text
//!   front LAN 10.81.0.0/24 (one bridge)                client LAN 10.82.0.0/24
//!   [lb1] .1  [lb2] .2  [lb3] .3  --+-- .254 [router] .1 --+-- .10 [client]
//!   [backend1] .11 [backend2] .12 --+
//! ```
//!
//! The service address [`L2_VIP`] is on the front LAN: the router finds its
//! owner by ARP. The backends take direct-routed packets (the address on
//! their `lo`, ARP for it off) and answer the client through the router, so
//! any load balancer can direct any connection.

use std::net::{Ipv4Addr, SocketAddr};

use crate::support::topology::Lan;
use crate::support::{Backend, Netns};

/// The service address, on the front LAN.
pub const L2_VIP: Ipv4Addr = Ipv4Addr::new(10, 81, 0, 100);
pub const ROUTER_FRONT: Ipv4Addr = Ipv4Addr::new(10, 81, 0, 254);
pub const L2_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 82, 0, 10);

/// The namespaces and LANs; dropping it removes them.
pub struct L2Site {
    pub lbs: [Netns; 3],
    pub router: Netns,
    pub client: Netns,
    pub backends: Vec<(Netns, Backend)>,
    pub front: Lan,
    pub clients: Lan,
}

impl L2Site {
    /// lbN's address on the front LAN: 10.81.0.N (index from 0).
    pub fn lb_addr(lb: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 81, 0, u8::try_from(lb + 1).unwrap())
    }

    pub fn backend_addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 81, 0, u8::try_from(i + 11).unwrap())
    }

    pub fn new(backends: usize) -> L2Site {
        let front = Lan::new();
        let clients = Lan::new();
        let lbs = [Netns::new(), Netns::new(), Netns::new()];
        let router = Netns::new();
        let client = Netns::new();
        for (i, lb) in lbs.iter().enumerate() {
            front.attach(lb, "front", &format!("{}/24", Self::lb_addr(i)));
        }
        front.attach(&router, "lan", &format!("{ROUTER_FRONT}/24"));
        clients.attach(&router, "cl", "10.82.0.1/24");
        router.enable_forwarding();
        clients.attach(&client, "eth0", &format!("{L2_CLIENT}/24"));
        client.ip(&["route", "add", "default", "via", "10.82.0.1"]);
        let backends = (0..backends)
            .map(|i| {
                let ns = Netns::new();
                front.attach(&ns, "eth0", &format!("{}/24", Self::backend_addr(i)));
                for scope in ["all", "eth0"] {
                    ns.sysctl(&format!("net.ipv4.conf.{scope}.arp_ignore"), "1");
                    ns.sysctl(&format!("net.ipv4.conf.{scope}.arp_announce"), "2");
                }
                ns.ip_batch(&format!(
                    "addr add {L2_VIP}/32 dev lo\nroute add default via {ROUTER_FRONT}\n"
                ));
                let backend = Backend::start(
                    &ns,
                    &format!("backend{}", i + 1),
                    SocketAddr::from(([0, 0, 0, 0], 80)),
                );
                (ns, backend)
            })
            .collect();
        L2Site {
            lbs,
            router,
            client,
            backends,
            front,
            clients,
        }
    }

    /// The MAC of lbN's front interface.
    pub fn lb_mac(&self, lb: usize) -> String {
        let out = self.lbs[lb].ip(&["-o", "link", "show", "front"]);
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    /// The MAC the router's neighbour table has for the VIP, if any.
    pub fn router_neighbour(&self) -> Option<String> {
        let out = self.router.ip(&["neigh", "show", &L2_VIP.to_string(), "dev", "lan"]);
        out.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(String::from)
    }

    /// The load balancers holding the VIP on their front interface now.
    pub fn holders(&self) -> Vec<usize> {
        (0..3)
            .filter(|lb| {
                self.lbs[*lb]
                    .ip(&["-o", "addr", "show", "dev", "front"])
                    .contains(&format!("inet {L2_VIP}/32"))
            })
            .collect()
    }
}
