#![no_main]
//! Fuzz target: see `gitd::fuzz::pkt_lines`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gitd::fuzz::pkt_lines(data));
