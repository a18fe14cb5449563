//! ipvsadm text format (placeholder).
