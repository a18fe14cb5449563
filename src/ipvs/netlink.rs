//! Netlink kernel client (placeholder).
