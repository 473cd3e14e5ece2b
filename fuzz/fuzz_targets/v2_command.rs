#![no_main]
//! Fuzz target: see `gitd::fuzz::v2_commands`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gitd::fuzz::v2_commands(data));
