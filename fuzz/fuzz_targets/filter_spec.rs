#![no_main]
//! Fuzz target: see `gitd::fuzz::filter_spec`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gitd::fuzz::filter_spec(data));
