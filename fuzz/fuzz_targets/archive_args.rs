#![no_main]
//! Fuzz target: see `gitd::fuzz::archive_args`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gitd::fuzz::archive_args(data));
