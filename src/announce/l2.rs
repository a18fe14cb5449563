//! `ANNOUNCE=l2`: one owner per address on a flat network, chosen through
//! Raft and fenced by leases.
