#![no_main]
//! Fuzz target: see `gitd::fuzz::v0_negotiation`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gitd::fuzz::v0_negotiation(data));
