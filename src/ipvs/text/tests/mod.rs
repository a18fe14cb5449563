//! Tests of the ipvsadm text format: parser tables, printer fixtures and
//! property tests.

mod parse;
mod print;
mod roundtrip;
