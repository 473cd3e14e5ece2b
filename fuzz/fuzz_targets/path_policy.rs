#![no_main]
//! Fuzz target: see `gitd::fuzz::path_policy`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gitd::fuzz::path_policy(data));
