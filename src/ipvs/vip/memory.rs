//! [`MemoryVips`]: the VIP table's rules in memory, with scripted
//! failures, for tests and `IPVS_KERNEL=memory`.

use super::{host_prefix, not_bindable, validate_ifname, VipError, VipReport, VipTable};
use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a scripted failure of [`MemoryVips`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipOp {
    /// Creating, setting up or listing the interface (in `sync` and in
    /// `addresses`).
    Link,
    Add(IpAddr),
    Remove(IpAddr),
}

struct Fault {
    op: VipOp,
    errno: i32,
    /// `None` fails every match for good.
    remaining: Option<usize>,
}

#[derive(Default)]
struct MemoryState {
    /// `None` while the interface does not exist.
    link: Option<MemoryLink>,
    faults: Vec<Fault>,
    syncs: usize,
}

#[derive(Default)]
struct MemoryLink {
    up: bool,
    addresses: BTreeSet<IpAddr>,
}

impl MemoryState {
    /// Fires the first fault for `op`, if any, and uses it up.
    fn fire(&mut self, op: VipOp) -> Option<io::Error> {
        let pos = self.faults.iter().position(|f| f.op == op)?;
        let fault = self.faults.get_mut(pos)?;
        let errno = fault.errno;
        if let Some(left) = fault.remaining.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.faults.remove(pos);
            }
        }
        Some(io::Error::from_raw_os_error(errno))
    }
}

/// An in-memory VIP table with [`LinkVips`]'s rules (name validation,
/// bindable addresses, creation and set-up of the interface, removal of every
/// unwanted address), scripted failures, and "by hand" changes as an
/// operator would make them.
///
/// Clones share one interface: a test keeps a clone to script and inspect
/// while the code under test owns another.
#[derive(Clone)]
pub struct MemoryVips {
    ifname: String,
    state: Arc<Mutex<MemoryState>>,
}

impl std::fmt::Debug for MemoryVips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryVips")
            .field("ifname", &self.ifname)
            .field("exists", &state.link.is_some())
            .field("up", &state.link.as_ref().is_some_and(|l| l.up))
            .field("addresses", &state.link.as_ref().map(|l| &l.addresses))
            .finish()
    }
}

impl MemoryVips {
    /// A table whose interface does not exist yet.
    pub fn new(ifname: &str) -> Result<MemoryVips, VipError> {
        validate_ifname(ifname)?;
        Ok(MemoryVips {
            ifname: ifname.to_owned(),
            state: Arc::default(),
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // A panicking test thread leaves plain data behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the interface by hand (down), as `ip link add NAME type
    /// dummy` would; no-op when it exists.
    pub fn create_by_hand(&self) {
        self.state().link.get_or_insert_with(MemoryLink::default);
    }

    /// Sets the interface down by hand; false when it does not exist.
    pub fn set_down_by_hand(&self) -> bool {
        match self.state().link.as_mut() {
            Some(link) => {
                link.up = false;
                true
            }
            None => false,
        }
    }

    /// Binds an address by hand (creating the interface if missing), as an
    /// operator's `ip addr add` would; the next sync removes it unless
    /// wanted.
    pub fn add_by_hand(&self, address: IpAddr) {
        self.state()
            .link
            .get_or_insert_with(MemoryLink::default)
            .addresses
            .insert(address);
    }

    /// Deletes the interface and its addresses, as `ip link del` would.
    pub fn delete_by_hand(&self) {
        self.state().link = None;
    }

    /// Whether the interface exists.
    pub fn exists(&self) -> bool {
        self.state().link.is_some()
    }

    /// Whether the interface exists and is up.
    pub fn is_up(&self) -> bool {
        self.state().link.as_ref().is_some_and(|l| l.up)
    }

    /// The addresses on the interface, without going through the trait (no
    /// fault fires).
    pub fn current(&self) -> BTreeSet<IpAddr> {
        self.state()
            .link
            .as_ref()
            .map(|l| l.addresses.clone())
            .unwrap_or_default()
    }

    /// Makes the next `times` operations matching `op` fail with `errno`
    /// (`None`: every one, until [`MemoryVips::clear_faults`]).
    pub fn fail(&self, op: VipOp, errno: i32, times: Option<usize>) {
        if times == Some(0) {
            return;
        }
        self.state().faults.push(Fault {
            op,
            errno,
            remaining: times,
        });
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// How many times [`VipTable::sync`] was called.
    pub fn syncs(&self) -> usize {
        self.state().syncs
    }

    fn try_sync(
        &self,
        state: &mut MemoryState,
        wanted: &BTreeSet<IpAddr>,
        report: &mut VipReport,
    ) -> Result<(), VipError> {
        let ifname = || self.ifname.clone();
        if state.link.is_none() {
            if let Some(source) = state.fire(VipOp::Link) {
                return Err(VipError::Create {
                    ifname: ifname(),
                    source,
                });
            }
            state.link = Some(MemoryLink::default());
            report.created = true;
        }
        if !state.link.as_ref().is_some_and(|l| l.up) {
            if let Some(source) = state.fire(VipOp::Link) {
                return Err(VipError::SetUp {
                    ifname: ifname(),
                    source,
                });
            }
            report.set_up = true;
        }
        if let Some(source) = state.fire(VipOp::Link) {
            return Err(VipError::List {
                ifname: ifname(),
                source,
            });
        }
        let present = match state.link.as_mut() {
            Some(link) => {
                link.up = true;
                link.addresses.clone()
            }
            None => BTreeSet::new(),
        };
        for &address in &present {
            if wanted.contains(&address) && not_bindable(&address).is_none() {
                continue;
            }
            match state.fire(VipOp::Remove(address)) {
                Some(source) => report.failed.push((
                    address,
                    VipError::Remove {
                        address,
                        prefix_len: host_prefix(&address),
                        ifname: ifname(),
                        source,
                    },
                )),
                None => {
                    if let Some(link) = state.link.as_mut() {
                        link.addresses.remove(&address);
                    }
                    report.removed.push(address);
                }
            }
        }
        for &address in wanted {
            if present.contains(&address) && not_bindable(&address).is_none() {
                continue;
            }
            let failure = match not_bindable(&address) {
                Some(problem) => Some(VipError::NotBindable {
                    address,
                    ifname: ifname(),
                    problem,
                }),
                None => state.fire(VipOp::Add(address)).map(|source| VipError::Add {
                    address,
                    ifname: ifname(),
                    source,
                }),
            };
            match failure {
                Some(e) => report.failed.push((address, e)),
                None => {
                    if let Some(link) = state.link.as_mut() {
                        link.addresses.insert(address);
                    }
                    report.added.push(address);
                }
            }
        }
        Ok(())
    }
}

impl VipTable for MemoryVips {
    fn sync(&mut self, wanted: &BTreeSet<IpAddr>) -> VipReport {
        let mut report = VipReport::default();
        let mut state = self.state();
        state.syncs += 1;
        if let Err(e) = self.try_sync(&mut state, wanted, &mut report) {
            report.error = Some(e);
        }
        report
    }

    fn addresses(&mut self) -> Result<BTreeSet<IpAddr>, VipError> {
        let mut state = self.state();
        if state.link.is_none() {
            return Ok(BTreeSet::new());
        }
        if let Some(source) = state.fire(VipOp::Link) {
            return Err(VipError::List {
                ifname: self.ifname.clone(),
                source,
            });
        }
        Ok(state
            .link
            .as_ref()
            .map(|l| l.addresses.clone())
            .unwrap_or_default())
    }
}
