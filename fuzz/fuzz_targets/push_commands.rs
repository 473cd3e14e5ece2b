#![no_main]
//! Fuzz target: see `gitd::fuzz::push_commands`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gitd::fuzz::push_commands(data));
