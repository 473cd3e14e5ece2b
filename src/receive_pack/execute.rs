//! Carrying out the commands once the pack is in: git's `execute_commands`.
//!
//! In git's order: the connectivity check on the quarantined objects, refusal of
//! hidden refs, `pre-receive` (which may still veto everything and sees the
//! quarantine), migration of the objects into the repository, then per command
//! the checks of [`update`](super::update), the `update` hook and the ref
//! transaction: one per command, or one for all with `atomic`, where the first
//! failure fails every command. `post-receive` and `post-update` run after the
//! report ([`Push::after`]).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use gix::ObjectId;
use gix::bstr::{BString, ByteSlice};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use super::commands::Command;
use super::config::ReceiveConfig;
use super::connectivity::{Checker, Verdict};
use super::hooks::{Hooks, Invocation, push_option_env};
use super::output::Remote;
use super::quarantine::Quarantine;
use super::update::{self, Context, Message};
use crate::Result;
use crate::upload_pack::blocking;

/// One push's commands and what governs them.
pub struct Push<'a> {
    pub repo: &'a gix::ThreadSafeRepository,
    pub cfg: &'a ReceiveConfig,
    pub hooks: &'a Hooks,
    pub atomic: bool,
    /// The push options, when negotiated.
    pub options: Option<&'a [BString]>,
    /// The client's `shallow` lines.
    pub shallow: &'a [ObjectId],
}

/// Whether a command is still to be carried out (git's `should_process_cmd`).
fn pending(cmd: &Command) -> bool {
    cmd.error.is_none() && !cmd.skip_update
}

impl Push<'_> {
    /// Decide and apply every command, recording each outcome in `cmds`.
    /// `quarantine` holds the pushed objects (none for a push of deletions).
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        out: &mut Remote<'_, S>,
        cmds: &mut [Command],
        unpack_error: Option<&str>,
        quarantine: Option<Quarantine>,
    ) -> Result<()> {
        if unpack_error.is_some() {
            for cmd in cmds.iter_mut() {
                cmd.error = Some("unpacker error".into());
            }
            return Ok(());
        }
        if let Some(q) = &quarantine {
            self.check_connectivity(out, q, cmds).await?;
        }
        for cmd in cmds.iter_mut() {
            if cmd.error.is_none() && self.cfg.is_hidden(cmd.name.as_ref()) {
                cmd.error = Some(if cmd.is_delete() {
                    "deny deleting a hidden ref".into()
                } else {
                    "deny updating a hidden ref".into()
                });
            }
        }

        let mut env = push_option_env(self.options);
        if let Some(q) = &quarantine {
            env.extend(q.env().into_iter().map(|(k, v)| (k.to_string(), v)));
        }
        let stdin = cmds.iter().flat_map(Command::hook_line).collect();
        let inv = Invocation {
            args: Vec::new(),
            stdin,
            env,
        };
        if self.hooks.run(out, "pre-receive", inv).await == Some(false) {
            for cmd in cmds.iter_mut() {
                cmd.fail("pre-receive hook declined");
            }
            discard(quarantine).await;
            return Ok(());
        }
        if !cmds.iter().any(|c| c.error.is_none()) {
            discard(quarantine).await;
            return Ok(());
        }
        // A pusher that is gone (interrupted while pre-receive ran) would never
        // learn what became of its push: change nothing, as if it had hung up
        // a moment earlier. One that only closed its sending side waits for the
        // report.
        if out.gone_after_request().await {
            for cmd in cmds.iter_mut() {
                cmd.fail("the client hung up");
            }
            discard(quarantine).await;
            return Err("the client hung up before the refs were updated".into());
        }

        // From here on the objects are the repository's.
        let migrated = match quarantine {
            None => None,
            Some(q) => match tokio::task::spawn_blocking(move || q.migrate()).await? {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!("cannot migrate the pushed objects: {e}");
                    for cmd in cmds.iter_mut() {
                        cmd.fail("unable to migrate objects to permanent storage");
                    }
                    return Ok(());
                }
            },
        };
        let result = self.update_refs(out, cmds).await;
        // The pack's `.keep` goes once the refs point into it (or never will).
        if let Some(m) = migrated {
            tokio::task::spawn_blocking(move || drop(m)).await?;
        }
        result
    }

    /// Walk from every new value through the quarantined objects.
    async fn check_connectivity<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        out: &mut Remote<'_, S>,
        q: &Quarantine,
        cmds: &mut [Command],
    ) -> Result<()> {
        let dir = q.dir().to_owned();
        let shallow = self.shallow.to_vec();
        let tips: Vec<Option<ObjectId>> = cmds
            .iter()
            .map(|c| (!c.is_delete()).then_some(c.new))
            .collect();
        let (verdicts, messages) = blocking(self.repo, move |repo| {
            let mut checker = Checker::new(repo, &dir, &shallow)?;
            let verdicts = tips
                .into_iter()
                .map(|tip| tip.map(|t| checker.check(t)).transpose())
                .collect::<Result<Vec<_>>>()?;
            Ok((verdicts, checker.messages))
        })
        .await?;
        for m in &messages {
            out.send(m.as_bytes()).await;
        }
        for (cmd, verdict) in cmds.iter_mut().zip(verdicts) {
            match verdict {
                Some(Verdict::Missing) => cmd.fail("missing necessary objects"),
                Some(Verdict::Shallow) => cmd.fail("shallow update not allowed"),
                Some(Verdict::Connected) | None => {}
            }
        }
        Ok(())
    }

    /// The per-command checks, the `update` hook and the transactions.
    async fn update_refs<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        out: &mut Remote<'_, S>,
        cmds: &mut [Command],
    ) -> Result<()> {
        let all = cmds.to_vec();
        let (aliased, messages) = blocking(self.repo, move |r| {
            let (mut all, mut messages) = (all, Vec::new());
            update::check_aliases(r, &mut all, &mut messages);
            Ok((all, messages))
        })
        .await?;
        cmds.clone_from_slice(&aliased);
        tell(out, messages).await;
        // HEAD is read after the objects moved in, as git does.
        let ctx = Arc::new(blocking(self.repo, |r| Ok(Context::read(r))).await?);
        let cfg = Arc::new(self.cfg.clone());
        let mut edits = Vec::new();
        let mut atomic_failure: Option<&str> = None;
        for cmd in cmds.iter_mut() {
            if !pending(cmd) {
                continue;
            }
            let (c, cfg, ctx) = (cmd.clone(), Arc::clone(&cfg), Arc::clone(&ctx));
            let (planned, messages) = blocking(self.repo, move |r| {
                let mut messages = Vec::new();
                let planned = update::check(r, &cfg, &ctx, &c, &mut messages);
                Ok((planned, messages))
            })
            .await?;
            tell(out, messages).await;
            let planned = match planned {
                Ok(p) => p,
                Err(reason) => {
                    cmd.fail(reason);
                    if self.atomic {
                        atomic_failure = Some("atomic push failure");
                        break;
                    }
                    continue;
                }
            };
            if self.run_update_hook(out, cmd).await == Some(false) {
                out.error(&format!("hook declined to update {}", cmd.name))
                    .await;
                cmd.fail("hook declined");
                if self.atomic {
                    atomic_failure = Some("atomic push failure");
                    break;
                }
                continue;
            }
            tell(out, planned.after_hook).await;
            cmd.did_not_exist = planned.did_not_exist;
            if self.atomic {
                edits.push(planned.edit);
                continue;
            }
            let edit = planned.edit;
            if let Err(msg) =
                blocking(self.repo, move |r| Ok(update::commit(r, vec![edit]))).await?
            {
                out.error(&msg).await;
                cmd.fail("failed to update ref");
            }
        }
        if self.atomic && atomic_failure.is_none() && !edits.is_empty() {
            if let Err(msg) = blocking(self.repo, move |r| Ok(update::commit(r, edits))).await? {
                out.error(&msg).await;
                atomic_failure = Some("atomic transaction failed");
            }
        }
        if let Some(reason) = atomic_failure {
            for cmd in cmds.iter_mut() {
                cmd.fail(reason);
            }
        }
        Ok(())
    }

    /// `update <ref> <old> <new>`, without input.
    async fn run_update_hook<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        out: &mut Remote<'_, S>,
        cmd: &Command,
    ) -> Option<bool> {
        let inv = Invocation {
            args: vec![
                std::ffi::OsStr::from_bytes(cmd.name.as_bytes()).to_owned(),
                OsString::from(cmd.old.to_string()),
                OsString::from(cmd.new.to_string()),
            ],
            ..Default::default()
        };
        self.hooks.run(out, "update", inv).await
    }

    /// After the report: `post-receive` with the updated refs on its input, then
    /// `post-update` with their names as arguments. Their exit status changes
    /// nothing.
    pub async fn after<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        out: &mut Remote<'_, S>,
        cmds: &[Command],
    ) {
        let done: Vec<&Command> = cmds
            .iter()
            .filter(|c| c.error.is_none() && !c.did_not_exist)
            .collect();
        if done.is_empty() {
            return;
        }
        let inv = Invocation {
            args: Vec::new(),
            stdin: done.iter().flat_map(|c| c.hook_line()).collect(),
            env: push_option_env(self.options),
        };
        self.hooks.run(out, "post-receive", inv).await;
        let inv = Invocation {
            args: done
                .iter()
                .map(|c| std::ffi::OsStr::from_bytes(c.name.as_bytes()).to_owned())
                .collect(),
            ..Default::default()
        };
        self.hooks.run(out, "post-update", inv).await;
    }
}

/// Messages of the checks: to the pusher, or to the log.
async fn tell<S: AsyncRead + AsyncWrite + Unpin>(out: &mut Remote<'_, S>, messages: Vec<Message>) {
    for m in messages {
        match m {
            Message::Error(msg) => out.error(&msg).await,
            Message::Warning(msg) => out.warning(&msg).await,
            Message::Log(msg) => info!("{msg}"),
        }
    }
}

/// Remove a refused push's quarantine off the async threads.
async fn discard(quarantine: Option<Quarantine>) {
    if let Some(q) = quarantine {
        let _ = tokio::task::spawn_blocking(move || drop(q)).await;
    }
}
