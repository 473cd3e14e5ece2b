#![no_main]
//! Fuzz target: see `gitd::fuzz::session`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gitd::fuzz::session(data);
});
