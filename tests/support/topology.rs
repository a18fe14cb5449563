//! Networks of namespaces for traffic tests: [`Lan`]s (a bridge in a
//! namespace of its own) joining namespaces through veth pairs, routing and
//! forwarding helpers on [`Netns`], and [`Site`], the standard picture of
//! three load balancers, their backends and a client.
//!
//! ```text
//!              server LAN                          client LAN
//!             10.78.0.0/24                        10.79.0.0/24
//!  [backend1] .11 --+        +-- .1 [lb1] .1 --+
//!  [backend2] .12 --+--------+-- .2 [lb2] .2 --+-------- .10 [client]
//!  [backend3] .13 --+        +-- .3 [lb3] .3 --+
//!     ...                           |  |  |
//!                     management LAN 10.77.0.0/24, lbN at .N
//! ```
//!
//! - load balancers: interfaces `mgmt`, `servers`, `clients`; forwarding on;
//!   every address of [`VIP_RANGE`] (10.80.0.0/24) is local;
//! - backends: `eth0`, default route via the director's server LAN address;
//! - client: `eth0`, a route to [`VIP_RANGE`] via the director's client LAN
//!   address.
//!
//! Every load balancer sits on all three LANs at fixed addresses (lbN is .N
//! on each), so the director (the load balancer the traffic goes through) is
//! only a matter of the backends' and the client's routes:
//! [`Site::set_director`] moves it without touching the load balancers.
//! IPVS takes requests in the LOCAL_IN hook, so a VIP must be a local
//! destination of the director; a `local` route for the VIP range makes every
//! VIP in it local on every load balancer without an address per VIP.
//!
//! Each LAN's bridge lives in a namespace of its own, so several sites run
//! side by side with the same addresses without seeing each other.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use super::Netns;

/// Virtual services of a [`Site`] take their addresses from this range.
/// The Raft timing of the nodes the trials' sites start: the emulated CPU
/// answers an append in tens of milliseconds, often more than the default
/// 50 ms heartbeat, after which openraft gives the append up; followers then
/// stand for election (and, without pre-vote, unseat a working leader).
/// Slow hosts are what RAFT_HEARTBEAT_MS and RAFT_ELECTION_TIMEOUT_MS are
/// for. The failover benchmark clears it: it measures the defaults.
pub const VM_RAFT_TIMING: &[(&str, &str)] = &[
    ("RAFT_HEARTBEAT_MS", "200"),
    ("RAFT_ELECTION_TIMEOUT_MS", "1000"),
];

pub const VIP_RANGE: &str = "10.80.0.0/24";

/// The client's address on the client LAN.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 10);

/// Helpers for routing namespaces together.
impl Netns {
    /// Writes a sysctl of this namespace (`net.ipv4.ip_forward`, ...): those
    /// under `net.` are per namespace, and /proc/sys/net shows the writing
    /// thread's, hence the write from inside [`Netns::run`].
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))
            .unwrap_or_else(|e| panic!("sysctl {key}={value} in {}: {e}", self.name()));
    }

    /// Lets the namespace route packets between its interfaces, as a
    /// director must (IPVS NAT forwards the backends' replies).
    pub fn enable_forwarding(&self) {
        self.sysctl("net.ipv4.ip_forward", "1");
    }

    /// Routes `destination` (`10.80.0.0/24`, `default`) via `gateway`,
    /// replacing any route to the same destination.
    pub fn set_route(&self, destination: &str, gateway: impl Into<IpAddr>) {
        let gateway = gateway.into().to_string();
        self.ip(&["route", "replace", destination, "via", &gateway]);
    }
}

/// A LAN: a Linux bridge in a namespace of its own, to which [`Lan::attach`]
/// plugs namespaces with veth pairs. Dropping it deletes that namespace,
/// which deletes the bridge and every veth pair plugged into it.
#[derive(Debug)]
pub struct Lan {
    ns: Netns,
    ports: AtomicU32,
}

impl Lan {
    /// A bridge `br0`, up, without STP or forwarding delay: a port forwards
    /// as soon as it is plugged in.
    pub fn new() -> Self {
        let ns = Netns::new();
        ns.ip_batch(
            "link add br0 type bridge stp_state 0 forward_delay 0\n\
             link set br0 up\n",
        );
        Lan {
            ns,
            ports: AtomicU32::new(0),
        }
    }

    /// The namespace holding the bridge (to watch the wire with tcpdump).
    pub fn namespace(&self) -> &Netns {
        &self.ns
    }

    /// Plugs `ns` into the LAN: a veth pair whose end in `ns` is named
    /// `interface`, up, with `address` (`10.77.0.1/24`; IPv6 works too).
    pub fn attach(&self, ns: &Netns, interface: &str, address: &str) {
        self.plug(&[(ns, interface)]);
        ns.ip_batch(&interface_up(interface, address));
    }

    /// Plugs each namespace in with a veth pair whose end there is named as
    /// given, down and without an address: [`Lan::attach`] for many at the
    /// cost of one exec, for callers that configure the ends themselves.
    pub fn plug(&self, ends: &[(&Netns, &str)]) {
        // Each peer is created directly in its namespace: its name need only
        // be unique there, not in the bridge's namespace.
        let commands: String = ends
            .iter()
            .map(|(ns, interface)| {
                let port = self.ports.fetch_add(1, Ordering::Relaxed);
                format!(
                    "link add p{port} up master br0 type veth peer name {interface} netns {}\n",
                    ns.name()
                )
            })
            .collect();
        self.ns.ip_batch(&commands);
    }
}

impl Default for Lan {
    fn default() -> Self {
        Self::new()
    }
}

/// `ip -batch` lines giving `interface` its address and bringing it up; an
/// IPv6 address skips duplicate address detection, to be usable at once.
fn interface_up(interface: &str, address: &str) -> String {
    let nodad = if address.contains(':') { " nodad" } else { "" };
    format!("addr add {address} dev {interface}{nodad}\nlink set {interface} up\n")
}

/// Three load balancers (`lbs[0]` is lb1), backends and a client on three
/// LANs, traffic to [`VIP_RANGE`] going through one director; see the module
/// documentation for the picture. Nothing is configured in IPVS.
#[derive(Debug)]
pub struct Site {
    /// lb1, lb2, lb3: interfaces `mgmt`, `servers`, `clients`.
    pub lbs: [Netns; 3],
    /// backend1.. at [`Site::backend_addr`], interface `eth0`.
    pub backends: Vec<Netns>,
    /// At [`CLIENT_ADDR`], interface `eth0`.
    pub client: Netns,
    pub management: Lan,
    pub servers: Lan,
    pub clients: Lan,
    director: usize,
}

impl Site {
    /// Builds the site with `backends` backends (at most 50) and
    /// `lbs[director]` as the director.
    pub fn new(backends: usize, director: usize) -> Self {
        assert!(backends <= 50, "backend addresses run from .11 to .60");
        assert!(director < 3, "there are 3 load balancers, not {director}");
        // Each `ip` costs ~50 ms of emulated CPU and the VM has two: the
        // steps run in parallel, with one batch per namespace where possible.
        let [management, servers, clients] =
            parallel(vec![(); 3], |()| Lan::new()).try_into().unwrap();
        let mut namespaces = parallel(vec![(); 4 + backends], |()| Netns::new());
        let client = namespaces.pop().unwrap();
        let lbs: [Netns; 3] = namespaces
            .drain(..3)
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        let backends = namespaces;

        let lan_ends = |interface: &'static str| lbs.iter().map(move |lb| (lb, interface));
        let plugs = vec![
            (&management, lan_ends("mgmt").collect::<Vec<_>>()),
            (
                &servers,
                lan_ends("servers")
                    .chain(backends.iter().map(|b| (b, "eth0")))
                    .collect(),
            ),
            (
                &clients,
                lan_ends("clients").chain([(&client, "eth0")]).collect(),
            ),
        ];
        parallel(plugs, |(lan, ends)| lan.plug(&ends));

        let mut configs: Vec<(&Netns, String)> = Vec::new();
        for (i, lb) in lbs.iter().enumerate() {
            lb.enable_forwarding();
            configs.push((
                lb,
                [
                    interface_up("mgmt", &format!("{}/24", Self::management_addr(i))),
                    interface_up("servers", &format!("{}/24", Self::server_lan_addr(i))),
                    interface_up("clients", &format!("{}/24", Self::client_lan_addr(i))),
                    format!("route add local {VIP_RANGE} dev lo\n"),
                ]
                .concat(),
            ));
        }
        for (i, backend) in backends.iter().enumerate() {
            configs.push((
                backend,
                interface_up("eth0", &format!("{}/24", Self::backend_addr(i)))
                    + &format!(
                        "route add default via {}\n",
                        Self::server_lan_addr(director)
                    ),
            ));
        }
        configs.push((
            &client,
            interface_up("eth0", &format!("{CLIENT_ADDR}/24"))
                + &format!(
                    "route add {VIP_RANGE} via {}\n",
                    Self::client_lan_addr(director)
                ),
        ));
        parallel(configs, |(ns, commands)| ns.ip_batch(&commands));

        Site {
            lbs,
            backends,
            client,
            management,
            servers,
            clients,
            director,
        }
    }

    /// Index in [`Site::lbs`] of the director.
    pub fn director(&self) -> usize {
        self.director
    }

    /// The director's namespace, where its IPVS table is.
    pub fn director_ns(&self) -> &Netns {
        &self.lbs[self.director]
    }

    /// Sends the traffic through `lbs[lb]`: the backends' default route and
    /// the client's route to [`VIP_RANGE`] now point at it. Connections that
    /// IPVS knows only on the previous director break.
    pub fn set_director(&mut self, lb: usize) {
        assert!(lb < self.lbs.len(), "there are 3 load balancers, not {lb}");
        let routes = self
            .backends
            .iter()
            .map(|b| (b, "default", Self::server_lan_addr(lb)))
            .chain([(&self.client, VIP_RANGE, Self::client_lan_addr(lb))])
            .collect();
        parallel(routes, |(ns, destination, gateway)| {
            ns.set_route(destination, gateway);
        });
        self.director = lb;
    }

    /// `lbs[lb]` on the management LAN: 10.77.0.(lb + 1).
    pub fn management_addr(lb: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, host(lb + 1))
    }

    /// `lbs[lb]` on the server LAN: 10.78.0.(lb + 1).
    pub fn server_lan_addr(lb: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, 0, host(lb + 1))
    }

    /// `lbs[lb]` on the client LAN: 10.79.0.(lb + 1).
    pub fn client_lan_addr(lb: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 79, 0, host(lb + 1))
    }

    /// `backends[i]` on the server LAN: 10.78.0.(i + 11).
    pub fn backend_addr(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, 0, host(i + 11))
    }
}

fn host(n: usize) -> u8 {
    u8::try_from(n).unwrap_or_else(|_| panic!("host number {n} does not fit a /24"))
}

/// `f` applied to every item, each on a thread of its own; results in order.
/// A panic is resumed here with its own message once all threads are done.
fn parallel<I: Send, T: Send>(items: Vec<I>, f: impl Fn(I) -> T + Sync) -> Vec<T> {
    let f = &f;
    let results: Vec<std::thread::Result<T>> = std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .into_iter()
            .map(|item| scope.spawn(move || f(item)))
            .collect();
        workers.into_iter().map(|w| w.join()).collect()
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        .collect()
}
