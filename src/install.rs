//! `gitd install --user`: write `git.socket` and `git.service` for the user's
//! systemd manager, pointing at this binary, and optionally start the socket.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::cli::InstallArgs;

const SOCKET_TEMPLATE: &str = include_str!("../units/git.socket");
const SERVICE_TEMPLATE: &str = include_str!("../units/git.service");

/// Exit status when no user manager can be reached (the units are written anyway).
pub const NO_USER_MANAGER: u8 = 3;

pub fn run(args: &InstallArgs) -> ExitCode {
    match install(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gitd install: {e}");
            ExitCode::FAILURE
        }
    }
}

fn install(args: &InstallArgs) -> Result<ExitCode, String> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or("HOME is not set")?;
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| format!("cannot locate gitd itself: {e}"))?;
    let base = match &args.base_path {
        Some(p) if p.is_absolute() => p.clone(),
        Some(p) => std::env::current_dir().map_err(|e| e.to_string())?.join(p),
        None => home.join("git"),
    };
    std::fs::create_dir_all(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    let unit_dir = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("systemd/user"),
        _ => home.join(".config/systemd/user"),
    };
    std::fs::create_dir_all(&unit_dir)
        .map_err(|e| format!("cannot create {}: {e}", unit_dir.display()))?;

    let mut exec = vec![
        exe.display().to_string(),
        format!("--base-path={}", base.display()),
    ];
    if args.export_all {
        exec.push("--export-all".into());
    }
    exec.push(format!("--idle-timeout={}", args.idle_timeout));
    let exec_line = exec
        .iter()
        .map(|a| systemd_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let service = replace_line(
        SERVICE_TEMPLATE,
        "ExecStart=",
        &format!("ExecStart={exec_line}"),
    );
    // Pushes (when enabled) write below the base path only.
    let service = replace_line(
        &service,
        "ReadWritePaths=",
        &format!(
            "ReadWritePaths={}",
            systemd_quote(&format!("-{}", base.display()))
        ),
    );
    // PrivateTmp= would hide a gitd or a base path that lives in /tmp or /var/tmp.
    let in_tmp = |p: &std::path::Path| p.starts_with("/tmp") || p.starts_with("/var/tmp");
    let service = if in_tmp(&exe) || in_tmp(&base) {
        replace_line(&service, "PrivateTmp=", "PrivateTmp=no")
    } else {
        service
    };
    let listen = match &args.listen {
        Some(addr) if addr.contains(':') && !addr.starts_with('[') => {
            format!("[{addr}]:{}", args.port)
        }
        Some(addr) => format!("{addr}:{}", args.port),
        None => args.port.to_string(),
    };
    let socket = replace_line(
        SOCKET_TEMPLATE,
        "ListenStream=",
        &format!("ListenStream={listen}"),
    );
    write(&unit_dir.join("git.socket"), &socket)?;
    write(&unit_dir.join("git.service"), &service)?;
    println!(
        "wrote {}/git.socket and git.service (serving {})",
        unit_dir.display(),
        base.display()
    );
    install_docs(&home)?;

    let standalone = format!(
        "{} --base-path={}{} --port={}",
        exe.display(),
        base.display(),
        if args.export_all { " --export-all" } else { "" },
        args.port
    );
    if let Err(why) = systemctl(&["daemon-reload"]) {
        eprintln!("no systemd user manager is reachable ({why}).");
        eprintln!("Run gitd standalone instead:\n  {standalone}");
        return Ok(ExitCode::from(NO_USER_MANAGER));
    }
    if args.now {
        systemctl(&["enable", "git.socket"])?;
        // Restart so a changed port or path takes effect; this also starts it.
        systemctl(&["restart", "git.socket"])?;
        println!(
            "git.socket is listening on {listen}; clone with: git clone git://localhost:{}/<repo>",
            args.port
        );
    } else {
        println!("start it with: systemctl --user enable --now git.socket");
    }
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, content: impl AsRef<[u8]>) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, content).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The manual page and shell completions, where `man` and the shells look for a
/// user's own: `~/.local/share/man/man1`, bash-completion's and fish's user
/// directories, and `~/.local/share/zsh/site-functions` (add it to `fpath`).
fn install_docs(home: &Path) -> Result<(), String> {
    let data = match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => home.join(".local/share"),
    };
    let config = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => home.join(".config"),
    };
    use clap_complete::Shell;
    write(&data.join("man/man1/gitd.1"), crate::cli::man_page())?;
    write(
        &data.join("bash-completion/completions/gitd"),
        crate::cli::completions(Shell::Bash),
    )?;
    write(
        &data.join("zsh/site-functions/_gitd"),
        crate::cli::completions(Shell::Zsh),
    )?;
    write(
        &config.join("fish/completions/gitd.fish"),
        crate::cli::completions(Shell::Fish),
    )?;
    println!(
        "wrote the manual page ({}) and shell completions",
        data.join("man/man1/gitd.1").display()
    );
    Ok(())
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "systemctl --user {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Replace the first line starting with `key` by `line`.
fn replace_line(template: &str, key: &str, line: &str) -> String {
    let mut done = false;
    let mut out = String::with_capacity(template.len() + line.len());
    for l in template.lines() {
        if !done && l.starts_with(key) {
            out.push_str(line);
            done = true;
        } else {
            out.push_str(l);
        }
        out.push('\n');
    }
    out
}

/// Quote one `ExecStart=` word: `%` is a specifier and `\`/`"` need escaping.
fn systemd_quote(word: &str) -> String {
    let escaped = word.replace('%', "%%");
    if escaped
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '\'')
    {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_templating() {
        assert_eq!(systemd_quote("/usr/bin/gitd"), "/usr/bin/gitd");
        assert_eq!(
            systemd_quote("--base-path=/home/a b/100%"),
            "\"--base-path=/home/a b/100%%\""
        );
        let unit = replace_line(SERVICE_TEMPLATE, "ExecStart=", "ExecStart=/x/gitd");
        assert!(unit.contains("\nExecStart=/x/gitd\n"));
        assert_eq!(unit.matches("ExecStart=").count(), 1);
        assert!(unit.contains("Type=notify"));
        assert!(SOCKET_TEMPLATE.contains("Accept=no"));
    }
}
