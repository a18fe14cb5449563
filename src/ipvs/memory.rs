//! In-memory IPVS table with the kernel's rules (placeholder).
