//! The `argument` lines of an upload-archive request, parsed as git parses them
//! (`archive.c: parse_archive_args` with `parse-options`), with git's messages: a
//! client that makes a mistake reads the same error from gitd as from git daemon.
//!
//! Options that only make sense on the client (`--output`, `--remote`, `--exec`) or
//! that would reach into the server's file system (`--add-file`,
//! `--add-virtual-file`) are refused as git refuses them in remote mode.

/// `git archive -h`, as git 2.47 prints it.
pub const USAGE: &str = include_str!("usage.txt");

/// The formats a remote client may ask for, in git's `--list` order.
pub const FORMATS: [&str; 4] = ["tar", "tgz", "tar.gz", "zip"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Tar,
    /// `tgz` or `tar.gz`: tar through git's internal gzip.
    TarGz,
    Zip,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub format: Format,
    /// Compression level; `None` is zlib's default.
    pub level: Option<u32>,
    pub prefix: Vec<u8>,
    pub verbose: bool,
    /// Ignore the archived tree's `.gitattributes` (a bare repository has no worktree
    /// to read them from instead).
    pub worktree_attributes: bool,
    pub mtime: Option<String>,
    pub treeish: String,
    pub paths: Vec<String>,
}

/// What the arguments ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Archive(Request),
    /// `--list`: the formats, one a line.
    List,
}

/// Why the arguments were refused, as git reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `die()`: `fatal: <message>`.
    Fatal(String),
    /// A parse-options error (`error: …`, or none for a missing tree-ish) followed by
    /// the usage text.
    Usage(Option<String>),
    /// `-h`: the usage text on standard output, then failure.
    Help,
}

/// Options with a value, and whether they have a `--no-` form.
const STRING_OPTS: [(&str, bool); 7] = [
    ("format", true),
    ("prefix", true),
    ("add-file", true),
    ("add-virtual-file", true),
    ("output", true),
    ("mtime", false),
    ("remote", true),
];
const BOOL_OPTS: [&str; 3] = ["worktree-attributes", "verbose", "list"];
/// Long options in git's declaration order (abbreviations are resolved against it).
const LONG: [&str; 11] = [
    "format",
    "prefix",
    "add-file",
    "add-virtual-file",
    "output",
    "worktree-attributes",
    "verbose",
    "mtime",
    "list",
    "remote",
    "exec",
];

#[derive(Default)]
struct State {
    format: Option<String>,
    prefix: Option<String>,
    extra_files: usize,
    output: Option<String>,
    remote: Option<String>,
    exec: Option<String>,
    mtime: Option<String>,
    level: Option<i64>,
    verbose: bool,
    list: bool,
    worktree_attributes: bool,
}

/// Parse the arguments a remote client sent.
pub fn parse(args: &[String]) -> Result<Parsed, Refusal> {
    let mut st = State::default();
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let (opt, negated) = resolve_long(name)?;
            let takes_value = !BOOL_OPTS.contains(&opt);
            let value = if negated || !takes_value {
                if value.is_some() {
                    return Err(usage(format!(
                        "option `{}' takes no value",
                        display(opt, negated)
                    )));
                }
                None
            } else {
                match value {
                    Some(v) => Some(v),
                    None if i < args.len() => {
                        i += 1;
                        Some(args[i - 1].clone())
                    }
                    None => return Err(usage(format!("option `{opt}' requires a value"))),
                }
            };
            set(&mut st, opt, negated, value)?;
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let bytes = shorts.as_bytes();
            let mut j = 0;
            while j < bytes.len() {
                match bytes[j] {
                    b'v' => st.verbose = true,
                    b'l' => st.list = true,
                    b'h' => return Err(Refusal::Help),
                    b'o' => {
                        let v = if j + 1 < bytes.len() {
                            shorts[j + 1..].to_string()
                        } else if i < args.len() {
                            i += 1;
                            args[i - 1].clone()
                        } else {
                            return Err(usage("switch `o' requires a value".into()));
                        };
                        st.output = Some(v);
                        break;
                    }
                    b'0'..=b'9' => {
                        let end = bytes[j..]
                            .iter()
                            .position(|b| !b.is_ascii_digit())
                            .map_or(bytes.len(), |n| j + n);
                        st.level = Some(shorts[j..end].parse().unwrap_or(i64::MAX));
                        j = end;
                        continue;
                    }
                    other => {
                        return Err(usage(format!("unknown switch `{}'", other as char)));
                    }
                }
                j += 1;
            }
        } else {
            positional.push(arg.clone());
        }
    }

    if st.remote.is_some() {
        return Err(fatal("Unexpected option --remote"));
    }
    if st.exec.is_some() {
        return Err(fatal("the option '--exec' requires '--remote'"));
    }
    if st.output.is_some() {
        return Err(fatal("Unexpected option --output"));
    }
    if st.extra_files > 0 {
        return Err(fatal(
            "options '--add-file' and '--remote' cannot be used together",
        ));
    }
    if st.list {
        if let Some(extra) = positional.first() {
            return Err(fatal(&format!("extra command line parameter '{extra}'")));
        }
        return Ok(Parsed::List);
    }
    let name = st.format.unwrap_or_else(|| "tar".into());
    let Some(treeish) = positional.first().cloned() else {
        return Err(Refusal::Usage(None));
    };
    let format = match name.as_str() {
        "tar" => Format::Tar,
        "tgz" | "tar.gz" => Format::TarGz,
        "zip" => Format::Zip,
        _ => return Err(fatal(&format!("Unknown archive format '{name}'"))),
    };
    let level = match (st.level, format) {
        (None, _) => None,
        (Some(n), Format::TarGz) if n > 9 => {
            // git passes it on to zlib, which refuses it.
            return Err(fatal("deflateInit2: stream consistency error (no message)"));
        }
        (Some(n), Format::TarGz) => Some(n as u32),
        (Some(n), Format::Zip) if n <= 9 => Some(n as u32),
        (Some(n), _) => {
            return Err(fatal(&format!(
                "Argument not supported for format '{name}': -{n}"
            )));
        }
    };
    Ok(Parsed::Archive(Request {
        format,
        level,
        prefix: st.prefix.unwrap_or_default().into_bytes(),
        verbose: st.verbose,
        worktree_attributes: st.worktree_attributes,
        mtime: st.mtime,
        treeish,
        paths: positional[1..].to_vec(),
    }))
}

/// A long option by its full name or a unique abbreviation, possibly `no-`.
fn resolve_long(name: &str) -> Result<(&'static str, bool), Refusal> {
    let negatable = |opt: &str| opt != "mtime";
    for opt in LONG {
        if name == opt {
            return Ok((opt, false));
        }
        if name.strip_prefix("no-") == Some(opt) && negatable(opt) {
            return Ok((opt, true));
        }
    }
    let mut found: Vec<(&'static str, bool)> = Vec::new();
    for opt in LONG {
        if !name.is_empty() && opt.starts_with(name) {
            found.push((opt, false));
        } else if let Some(rest) = name.strip_prefix("no-")
            && negatable(opt)
            && !rest.is_empty()
            && opt.starts_with(rest)
        {
            found.push((opt, true));
        }
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [a, b, ..] => Err(usage(format!(
            "ambiguous option: {name} (could be --{} or --{})",
            display(a.0, a.1),
            display(b.0, b.1)
        ))),
        [] => Err(usage(format!("unknown option `{name}'"))),
    }
}

fn display(opt: &str, negated: bool) -> String {
    if negated {
        format!("no-{opt}")
    } else {
        opt.to_string()
    }
}

fn set(st: &mut State, opt: &str, negated: bool, value: Option<String>) -> Result<(), Refusal> {
    match opt {
        "format" => st.format = value,
        "prefix" => st.prefix = value,
        "output" => st.output = value,
        "remote" => st.remote = value,
        "exec" => st.exec = value,
        "mtime" => st.mtime = value,
        "verbose" => st.verbose = !negated,
        "list" => st.list = !negated,
        "worktree-attributes" => st.worktree_attributes = !negated,
        "add-file" | "add-virtual-file" => match value {
            None => st.extra_files = 0,
            Some(v) => {
                if opt == "add-virtual-file" && !v.starts_with('"') {
                    match v.find(':') {
                        None => return Err(fatal(&format!("missing colon: '{v}'"))),
                        Some(0) => return Err(fatal(&format!("empty file name: '{v}'"))),
                        Some(_) => {}
                    }
                }
                st.extra_files += 1;
            }
        },
        _ => unreachable!("every long option is handled"),
    }
    debug_assert!(
        STRING_OPTS.iter().any(|(o, _)| *o == opt) || opt == "exec" || BOOL_OPTS.contains(&opt)
    );
    Ok(())
}

fn fatal(msg: &str) -> Refusal {
    Refusal::Fatal(msg.to_string())
}

fn usage(error: String) -> Refusal {
    Refusal::Usage(Some(error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, Refusal> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn req(args: &[&str]) -> Request {
        match p(args) {
            Ok(Parsed::Archive(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_as_parse_options_reads_them() {
        let r = req(&["--form=zip", "-9", "main", "--prefix", "p/", "src", "-v"]);
        assert_eq!(r.format, Format::Zip);
        assert_eq!(r.level, Some(9));
        assert_eq!(r.prefix, b"p/");
        assert!(r.verbose);
        assert_eq!(
            (r.treeish.as_str(), r.paths.as_slice()),
            ("main", &["src".to_string()][..])
        );
        assert_eq!(
            req(&["--format=zip", "--no-format", "main"]).format,
            Format::Tar
        );
        assert_eq!(req(&["--", "-odd"]).treeish, "-odd");
        assert_eq!(p(&["-l"]), Ok(Parsed::List));
    }

    #[test]
    fn refusals_use_gits_words() {
        let fatal = |s: &str| Err(Refusal::Fatal(s.into()));
        assert_eq!(
            p(&["--output=x", "main"]),
            fatal("Unexpected option --output")
        );
        assert_eq!(p(&["-o", "x", "main"]), fatal("Unexpected option --output"));
        assert_eq!(
            p(&["--remote=x", "main"]),
            fatal("Unexpected option --remote")
        );
        assert_eq!(
            p(&["--exec=x", "main"]),
            fatal("the option '--exec' requires '--remote'")
        );
        assert_eq!(
            p(&["--add-virtual-file=a:b", "main"]),
            fatal("options '--add-file' and '--remote' cannot be used together")
        );
        assert_eq!(
            p(&["--format=foo", "main"]),
            fatal("Unknown archive format 'foo'")
        );
        assert_eq!(
            p(&["-3", "main"]),
            fatal("Argument not supported for format 'tar': -3")
        );
        assert_eq!(
            p(&["--format=zip", "-10", "main"]),
            fatal("Argument not supported for format 'zip': -10")
        );
        assert_eq!(
            p(&["--list", "main"]),
            fatal("extra command line parameter 'main'")
        );
        assert_eq!(p(&[]), Err(Refusal::Usage(None)));
        assert_eq!(
            p(&["--prefix"]),
            Err(usage("option `prefix' requires a value".into()))
        );
        assert_eq!(
            p(&["--bogus", "main"]),
            Err(usage("unknown option `bogus'".into()))
        );
        assert_eq!(p(&["-x", "main"]), Err(usage("unknown switch `x'".into())));
        assert_eq!(
            p(&["--verbose=1", "main"]),
            Err(usage("option `verbose' takes no value".into()))
        );
        assert_eq!(
            p(&["--add", "x", "main"]),
            Err(usage(
                "ambiguous option: add (could be --add-file or --add-virtual-file)".into()
            ))
        );
        assert_eq!(
            p(&["--no-mtime", "main"]),
            Err(usage("unknown option `no-mtime'".into()))
        );
        assert_eq!(p(&["-h"]), Err(Refusal::Help));
    }
}
