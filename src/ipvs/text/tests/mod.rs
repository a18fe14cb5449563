//! Tests of the ipvsadm text format: parser tables, printer fixtures and
//! property tests.

mod invocation;
mod parse;
mod print;
mod roundtrip;
