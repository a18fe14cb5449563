//! Helpers shared by the integration tests: the real-kernel VM (`vm`),
//! network namespaces as independent IPVS hosts (`netns`), networks of them
//! (`topology`) and real traffic through IPVS (`traffic`).
//!
//! Include with `mod support;` from a file directly under tests/.
#![allow(dead_code)] // every test binary uses its own subset

pub mod bgp;
pub mod l2site;
pub mod netns;
pub mod topology;
pub mod traffic;
pub mod vm;

pub use netns::Netns;
pub use topology::Site;
pub use traffic::{Backend, Held, IpvsConnection};
pub use vm::{in_vm, rerun_in_vm};
