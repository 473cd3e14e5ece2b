//! Deciding and applying one ref update: git's `update()` in
//! `builtin/receive-pack.c` (refname rules, `receive.deny*`, the fast-forward
//! check), and its ref transactions.
//!
//! Every update is a compare-and-swap against the old value the client sent:
//! gix locks the ref, compares, and writes, so of two pushes racing for one ref
//! exactly one wins and the other fails cleanly (`failed to update ref`).

use std::collections::HashSet;

use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice};
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::{FullName, Target};

use super::commands::Command;
use super::config::{Deny, ReceiveConfig};

/// The long explanation git gives when `receive.denyCurrentBranch` is not set.
const REFUSE_UNCONFIGURED_DENY: &str =
    "By default, updating the current branch in a non-bare repository
is denied, because it will make the index and work tree inconsistent
with what you pushed, and will require 'git reset --hard' to match
the work tree to HEAD.

You can set the 'receive.denyCurrentBranch' configuration variable
to 'ignore' or 'warn' in the remote repository to allow pushing into
its current branch; however, this is not recommended unless you
arranged to update its work tree to match what you pushed in some
other way.

To squelch this message and still keep the default behaviour, set
'receive.denyCurrentBranch' configuration variable to 'refuse'.";

/// The same for `receive.denyDeleteCurrent`.
const REFUSE_UNCONFIGURED_DENY_DELETE_CURRENT: &str =
    "By default, deleting the current branch is denied, because the next
'git clone' won't result in any file checked out, causing confusion.

You can set 'receive.denyDeleteCurrent' configuration variable to
'warn' or 'ignore' in the remote repository to allow deleting the
current branch, with or without a warning message.

To squelch this message, you can set it to 'refuse'.";

/// A message for the pusher (`error:`/`warning:` on side-band 2) or the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Error(String),
    Warning(String),
    /// git writes these to its own stderr, which git daemon logs.
    Log(String),
}

/// What the repository looks like to the checks.
#[derive(Debug, Default)]
pub struct Context {
    /// Branches checked out in a work tree (main or linked; not a bare repository's
    /// HEAD).
    pub checked_out: HashSet<BString>,
    /// Where `HEAD` points, read after the objects moved in (as git does).
    pub head_name: Option<BString>,
}

impl Context {
    pub fn read(repo: &gix::Repository) -> Self {
        let head_name = repo
            .head_name()
            .ok()
            .flatten()
            .map(|n| n.as_bstr().to_owned());
        let mut checked_out = HashSet::new();
        if !repo.is_bare()
            && let Some(h) = &head_name
        {
            checked_out.insert(h.clone());
        }
        // Linked work trees: `worktrees/<id>/HEAD` holds `ref: <branch>`.
        if let Ok(entries) = std::fs::read_dir(repo.common_dir().join("worktrees")) {
            for entry in entries.flatten().take(10_000) {
                if let Ok(head) = std::fs::read(entry.path().join("HEAD"))
                    && let Some(target) = head.trim_end().strip_prefix(b"ref: ")
                {
                    checked_out.insert(target.trim().into());
                }
            }
        }
        Context {
            checked_out,
            head_name,
        }
    }
}

/// The outcome of the checks before the `update` hook.
#[derive(Debug)]
pub struct Planned {
    pub edit: RefEdit,
    /// Messages git prints after the hook (deleting a missing ref).
    pub after_hook: Vec<Message>,
    pub did_not_exist: bool,
}

/// git's `update()` up to the `update` hook: the edit to make, or why not.
pub fn check(
    repo: &gix::Repository,
    cfg: &ReceiveConfig,
    ctx: &Context,
    cmd: &Command,
    messages: &mut Vec<Message>,
) -> Result<Planned, &'static str> {
    let name = cmd.name.as_bstr();
    let full_name = match funny(name, cmd.is_delete()) {
        Some(n) => n,
        None => {
            messages.push(Message::Error(format!(
                "refusing to update funny ref '{}' remotely",
                crate::escape(name)
            )));
            return Err("funny refname");
        }
    };
    let checked_out = ctx.checked_out.contains(name);
    if checked_out {
        match cfg.deny_current_branch {
            Deny::Ignore => {}
            Deny::Warn => messages.push(Message::Warning("updating the current branch".into())),
            deny => {
                messages.push(Message::Error(format!(
                    "refusing to update checked out branch: {name}"
                )));
                match deny {
                    Deny::Unconfigured => {
                        messages.push(Message::Error(REFUSE_UNCONFIGURED_DENY.into()))
                    }
                    Deny::UpdateInstead => messages.push(Message::Error(
                        "receive.denyCurrentBranch=updateInstead is not supported by gitd: it never updates a work tree".into(),
                    )),
                    _ => {}
                }
                return Err("branch is currently checked out");
            }
        }
    }
    if !cmd.is_delete() && !repo.has_object(cmd.new) {
        messages.push(Message::Log(format!(
            "unpack should have generated {}, but I can't find it!",
            cmd.new
        )));
        return Err("bad pack");
    }
    if cmd.is_delete() && !cmd.is_create() {
        if cfg.deny_deletes && name.starts_with(b"refs/heads/") {
            messages.push(Message::Error(format!("denying ref deletion for {name}")));
            return Err("deletion prohibited");
        }
        if checked_out || ctx.head_name.as_ref().is_some_and(|h| h == name) {
            match cfg.deny_delete_current {
                Deny::Ignore => {}
                Deny::Warn => messages.push(Message::Warning("deleting the current branch".into())),
                deny => {
                    if deny == Deny::Unconfigured {
                        messages.push(Message::Error(
                            REFUSE_UNCONFIGURED_DENY_DELETE_CURRENT.into(),
                        ));
                    }
                    messages.push(Message::Error(format!(
                        "refusing to delete the current branch: {name}"
                    )));
                    return Err("deletion of the current branch prohibited");
                }
            }
        }
    }
    if cfg.deny_non_fast_forwards
        && !cmd.is_delete()
        && !cmd.is_create()
        && name.starts_with(b"refs/heads/")
    {
        match is_ancestor(repo, cmd.old, cmd.new) {
            None => {
                messages.push(Message::Log(format!("bad sha1 objects for {name}")));
                return Err("bad ref");
            }
            Some(false) => {
                messages.push(Message::Error(format!(
                    "denying non-fast-forward {name} (you should pull first)"
                )));
                return Err("non-fast-forward");
            }
            Some(true) => {}
        }
    }
    Ok(plan(repo, cmd, full_name))
}

/// The ref edit for a command that passed the checks.
fn plan(repo: &gix::Repository, cmd: &Command, name: FullName) -> Planned {
    let mut after_hook = Vec::new();
    let mut did_not_exist = false;
    let change = if cmd.is_delete() {
        // A corrupt ref (pointing at a missing object) may be deleted whatever it
        // holds; deleting a ref that does not exist is reported but harmless.
        let expected = if repo.has_object(cmd.old) {
            PreviousValue::MustExistAndMatch(Target::Object(cmd.old))
        } else {
            if repo
                .try_find_reference(name.as_ref())
                .ok()
                .flatten()
                .is_some()
            {
                after_hook.push(Message::Warning("allowing deletion of corrupt ref".into()));
            } else {
                after_hook.push(Message::Warning("deleting a non-existent ref".into()));
                did_not_exist = true;
            }
            PreviousValue::Any
        };
        Change::Delete {
            expected,
            log: RefLog::AndReference,
        }
    } else {
        Change::Update {
            log: LogChange {
                mode: RefLog::AndReference,
                force_create_reflog: false,
                message: "push".into(),
            },
            expected: if cmd.is_create() {
                PreviousValue::MustNotExist
            } else {
                PreviousValue::MustExistAndMatch(Target::Object(cmd.old))
            },
            new: Target::Object(cmd.new),
        }
    };
    Planned {
        edit: RefEdit {
            change,
            name,
            // Through symbolic refs to their targets, as git updates them.
            deref: true,
        },
        after_hook,
        did_not_exist,
    }
}

/// git's `check_aliased_updates`: a command on a symbolic ref whose target is
/// updated by the same push is done by that update (reported `ok`, not applied
/// twice); if the two disagree, both are refused. Run after the objects moved in.
pub fn check_aliases(repo: &gix::Repository, cmds: &mut [Command], messages: &mut Vec<Message>) {
    let names: Vec<BString> = cmds.iter().map(|c| c.name.clone()).collect();
    for i in 0..cmds.len() {
        if cmds[i].error.is_some() {
            continue;
        }
        let target = match symref_target(repo, cmds[i].name.as_bstr()) {
            Ok(None) => continue,
            Ok(Some(target)) => target,
            Err(()) => {
                messages.push(Message::Error(format!(
                    "refusing update to broken symref '{}'",
                    cmds[i].name
                )));
                cmds[i].skip_update = true;
                cmds[i].fail("broken symref");
                continue;
            }
        };
        let Some(j) = names.iter().position(|n| *n == target) else {
            continue;
        };
        cmds[i].skip_update = true;
        if (cmds[i].old, cmds[i].new) == (cmds[j].old, cmds[j].new) {
            continue;
        }
        cmds[j].skip_update = true;
        let short = |id: ObjectId| id.to_hex_with_len(7).to_string();
        messages.push(Message::Error(format!(
            "refusing inconsistent update between symref '{}' ({}..{}) and its target '{}' ({}..{})",
            cmds[i].name,
            short(cmds[i].old),
            short(cmds[i].new),
            cmds[j].name,
            short(cmds[j].old),
            short(cmds[j].new),
        )));
        cmds[i].error = Some("inconsistent aliased update".into());
        cmds[j].error = Some("inconsistent aliased update".into());
    }
}

/// Where a symbolic ref ends (its last target, which may not exist yet); `None`
/// for a ref that is not symbolic or does not exist, `Err` for a broken chain.
fn symref_target(repo: &gix::Repository, name: &BStr) -> Result<Option<BString>, ()> {
    let mut current: BString = name.to_owned();
    let mut symbolic = false;
    // git gives up after 5 levels (SYMREF_MAXDEPTH).
    for _ in 0..=5 {
        let Some(r) = repo.try_find_reference(current.as_bstr()).map_err(|_| ())? else {
            return Ok(symbolic.then_some(current));
        };
        match r.target() {
            gix::refs::TargetRef::Symbolic(t) => {
                current = t.as_bstr().to_owned();
                symbolic = true;
            }
            gix::refs::TargetRef::Object(_) => return Ok(symbolic.then_some(current)),
        }
    }
    Err(())
}

/// git's refname rule for pushes: under `refs/`, a valid name, and at least two
/// levels below `refs/` unless deleting. The validated name, or `None`.
fn funny(name: &BStr, deleting: bool) -> Option<FullName> {
    let rest = name.strip_prefix(b"refs/")?;
    if !deleting && !rest.contains(&b'/') {
        return None;
    }
    gix::validate::reference::name(name).ok()?;
    FullName::try_from(name).ok()
}

/// Is `old` an ancestor of `new` (both commits)? `None` if either is not a commit.
fn is_ancestor(repo: &gix::Repository, old: ObjectId, new: ObjectId) -> Option<bool> {
    let is_commit = |id: ObjectId| {
        repo.try_find_header(id)
            .ok()
            .flatten()
            .is_some_and(|h| h.kind() == gix::object::Kind::Commit)
    };
    if !is_commit(old) || !is_commit(new) {
        return None;
    }
    if old == new {
        return Some(true);
    }
    match repo.merge_base(old, new) {
        Ok(Some(base)) => Some(base.detach() == old),
        Ok(None) => Some(false),
        Err(_) => None,
    }
}

/// Apply `edits` as one transaction. The error is git's wording for the failure.
pub fn commit(repo: &gix::Repository, edits: Vec<RefEdit>) -> Result<(), String> {
    if let Some(refused) = edits.iter().find_map(|e| non_commit_to_branch(repo, e)) {
        return Err(refused);
    }
    let names: Vec<FullName> = edits.iter().map(|e| e.name.clone()).collect();
    let expected: Vec<Option<ObjectId>> = edits
        .iter()
        .map(|e| match &e.change {
            Change::Update { expected, .. } | Change::Delete { expected, .. } => match expected {
                PreviousValue::MustExistAndMatch(Target::Object(id)) => Some(*id),
                _ => None,
            },
        })
        .collect();
    let committer = committer(repo);
    let time = committer.2.clone();
    let signature = gix::actor::SignatureRef {
        name: committer.0.as_bstr(),
        email: committer.1.as_bstr(),
        time: &time,
    };
    match repo.edit_references_as(edits, Some(signature)) {
        Ok(_) => Ok(()),
        Err(err) => Err(describe(&err, &names, &expected)),
    }
}

/// A branch may only point at a commit: git's ref backends refuse anything else
/// when the transaction writes the ref (`write_ref_to_lockfile`), after the
/// `update` hook, so the whole transaction fails. Tags and other refs may point at
/// any object. The name checked is the one written, through symbolic refs.
fn non_commit_to_branch(repo: &gix::Repository, edit: &RefEdit) -> Option<String> {
    let Change::Update {
        new: Target::Object(id),
        ..
    } = &edit.change
    else {
        return None;
    };
    let name = edit.name.as_bstr();
    let written = match symref_target(repo, name) {
        Ok(Some(target)) => target,
        _ => name.to_owned(),
    };
    if !(written.starts_with(b"refs/heads/") || written == "HEAD") {
        return None;
    }
    let kind = repo.try_find_header(*id).ok().flatten().map(|h| h.kind());
    if kind == Some(gix::object::Kind::Commit) {
        return None;
    }
    Some(match kind {
        Some(_) => format!(
            "cannot update ref '{name}': trying to write non-commit object {id} to branch '{written}'"
        ),
        None => format!(
            "cannot update ref '{name}': trying to write ref '{written}' with nonexistent object {id}"
        ),
    })
}

/// git's `cannot lock ref '<name>': …` for a failed transaction.
fn describe(err: &gix::Error, names: &[FullName], expected: &[Option<ObjectId>]) -> String {
    use gix::refs::file::transaction::prepare::{MustNotExist, ReferenceOutOfDate};
    if let Some(e) = err.downcast_any_ref::<ReferenceOutOfDate>() {
        let wanted = names
            .iter()
            .position(|n| n.as_bstr() == e.full_name)
            .and_then(|i| expected[i]);
        return match wanted {
            Some(old) => format!(
                "cannot lock ref '{}': is at {} but expected {old}",
                e.full_name, e.actual
            ),
            None => format!("cannot lock ref '{}': {}", e.full_name, e),
        };
    }
    if let Some(e) = err.downcast_any_ref::<MustNotExist>() {
        return format!(
            "cannot lock ref '{}': reference already exists",
            e.full_name
        );
    }
    let cause = err.probable_cause().to_string();
    let top = err.to_string();
    let detail = if cause == top {
        cause
    } else {
        format!("{top}: {cause}")
    };
    match names {
        [one] => format!("cannot lock ref '{}': {detail}", one.as_bstr()),
        _ => detail,
    }
}

/// The identity in reflog entries: the repository's `user.*`/`committer.*`, else
/// gitd's own. (git uses the server user's identity.)
fn committer(repo: &gix::Repository) -> (BString, BString, String) {
    let snapshot = repo.config_snapshot();
    let get = |keys: [&str; 2], default: &str| -> BString {
        keys.iter()
            .find_map(|k| snapshot.string(*k))
            .unwrap_or_else(|| default.into())
    };
    let name = get(["committer.name", "user.name"], "gitd");
    let email = get(["committer.email", "user.email"], "gitd@localhost");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (name, email, format!("{now} +0000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn funny_refnames_follow_gits_rule() {
        assert!(funny("refs/heads/main".into(), false).is_some());
        assert!(funny("refs/tags/v1.0".into(), false).is_some());
        assert!(funny("refs/foo".into(), false).is_none(), "one level");
        assert!(
            funny("refs/foo".into(), true).is_some(),
            "deleting one level"
        );
        assert!(funny("HEAD".into(), false).is_none());
        assert!(funny("heads/main".into(), false).is_none());
        assert!(funny("refs/heads/a..b".into(), false).is_none());
        assert!(funny("refs/heads/x.lock".into(), false).is_none());
        assert!(funny("refs/heads/sp ace".into(), false).is_none());
    }
}
