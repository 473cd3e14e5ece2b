#![no_main]
//! Fuzz target: see `gitd::fuzz::request_line`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gitd::fuzz::request_line(data));
