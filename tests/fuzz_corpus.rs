//! Every input of the fuzz corpora and every crash the fuzzers ever found goes
//! through the same entry points the fuzz targets use: none may panic.

use std::path::Path;

fn run_all(target: &str, f: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            f(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no inputs for {target}");
}

#[test]
fn request_line_inputs() {
    run_all("request_line", gitd::fuzz::request_line);
}

#[test]
fn pkt_line_inputs() {
    run_all("pkt_line", gitd::fuzz::pkt_lines);
}

#[test]
fn v2_command_inputs() {
    run_all("v2_command", gitd::fuzz::v2_commands);
}

#[test]
fn v0_negotiation_inputs() {
    run_all("v0_negotiation", gitd::fuzz::v0_negotiation);
}

#[test]
fn push_command_inputs() {
    run_all("push_commands", gitd::fuzz::push_commands);
}
