//! ipvs-manager: a control-plane agent for Linux IPVS load balancers.
pub mod ipvs;
pub mod model;
