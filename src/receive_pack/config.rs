//! Per-repository `receive.*` settings, read from the served repository's config
//! the way git's receive-pack reads them (`builtin/receive-pack.c:
//! receive_pack_config`).

use gix::bstr::{BStr, BString};

use crate::upload_pack::config::{hide_refs, ref_is_hidden};

/// `receive.denyCurrentBranch` and `receive.denyDeleteCurrent` (`parse_deny_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deny {
    /// Not set: refuse, and explain at length.
    #[default]
    Unconfigured,
    Ignore,
    Warn,
    Refuse,
    /// `updateInstead`: git would update the work tree by running git commands,
    /// which gitd never does, so it refuses (saying why).
    UpdateInstead,
}

impl Deny {
    /// The words `parse_deny_action` knows; anything else is read as a boolean.
    fn keyword(value: &BStr) -> Option<Deny> {
        match value.to_ascii_lowercase().as_slice() {
            b"ignore" => Some(Deny::Ignore),
            b"warn" => Some(Deny::Warn),
            b"refuse" => Some(Deny::Refuse),
            b"updateinstead" => Some(Deny::UpdateInstead),
            _ => None,
        }
    }

    /// A boolean setting: true refuses, false ignores.
    fn from_bool(on: bool) -> Deny {
        if on { Deny::Refuse } else { Deny::Ignore }
    }
}

/// The receive-pack configuration of one repository.
#[derive(Debug, Clone)]
pub struct ReceiveConfig {
    pub deny_deletes: bool,
    pub deny_non_fast_forwards: bool,
    pub deny_current_branch: Deny,
    pub deny_delete_current: Deny,
    /// `transfer.hideRefs` and `receive.hideRefs`: not advertised, not updatable.
    pub hide_refs: Vec<BString>,
    /// `receive.advertiseAtomic` (default true).
    pub advertise_atomic: bool,
    /// `receive.advertisePushOptions` (default false, as in git: a client asked
    /// for `--push-option` then learns that nothing here would read them).
    pub advertise_push_options: bool,
    /// `repack.useDeltaBaseOffset` (default true): advertise `ofs-delta`.
    pub ofs_delta: bool,
    /// `receive.maxInputSize`; 0 means no limit of the repository's own.
    pub max_input_size: u64,
    /// `core.hooksPath`, as written.
    pub hooks_path: Option<BString>,
    /// `receive.fsckObjects` or `transfer.fsckObjects`: check every pushed object
    /// ([`fsck`](super::fsck)).
    pub fsck_objects: bool,
    /// `receive.unpackLimit` or `transfer.unpackLimit` (default 100). gitd always
    /// keeps the pack as it came, but names the unpacker git would have run below
    /// the limit (`unpack-objects`) in its unpack errors.
    pub unpack_limit: u32,
}

impl ReceiveConfig {
    pub fn from_repo(repo: &gix::Repository) -> Self {
        let snapshot = repo.config_snapshot();
        let file = snapshot.plumbing();
        let flag = |key: &str, default: bool| snapshot.boolean(key).unwrap_or(default);
        // A value that is not a keyword is a boolean; one git cannot read as a
        // boolean (it would die) refuses.
        let deny = |key: &str| match snapshot.string(key) {
            None => Deny::Unconfigured,
            Some(v) => Deny::keyword(v.as_ref())
                .unwrap_or_else(|| Deny::from_bool(snapshot.boolean(key).unwrap_or(true))),
        };
        let fsck = snapshot
            .boolean("receive.fsckObjects")
            .or_else(|| snapshot.boolean("transfer.fsckObjects"))
            .unwrap_or(false);
        ReceiveConfig {
            deny_deletes: flag("receive.denyDeletes", false),
            deny_non_fast_forwards: flag("receive.denyNonFastForwards", false),
            deny_current_branch: deny("receive.denyCurrentBranch"),
            deny_delete_current: deny("receive.denyDeleteCurrent"),
            hide_refs: hide_refs(file, "receive"),
            advertise_atomic: flag("receive.advertiseAtomic", true),
            advertise_push_options: flag("receive.advertisePushOptions", false),
            ofs_delta: flag("repack.useDeltaBaseOffset", true),
            max_input_size: snapshot
                .integer("receive.maxInputSize")
                .map_or(0, |v| v.max(0) as u64),
            hooks_path: snapshot.string("core.hooksPath"),
            fsck_objects: fsck,
            unpack_limit: snapshot
                .integer("receive.unpackLimit")
                .or_else(|| snapshot.integer("transfer.unpackLimit"))
                .map_or(100, |v| v.clamp(0, i64::from(u32::MAX)) as u32),
        }
    }

    pub fn is_hidden(&self, refname: &BStr) -> bool {
        ref_is_hidden(&self.hide_refs, refname)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_keywords() {
        assert_eq!(Deny::keyword("ignore".into()), Some(Deny::Ignore));
        assert_eq!(Deny::keyword("WARN".into()), Some(Deny::Warn));
        assert_eq!(Deny::keyword("refuse".into()), Some(Deny::Refuse));
        assert_eq!(
            Deny::keyword("updateInstead".into()),
            Some(Deny::UpdateInstead)
        );
        assert_eq!(Deny::keyword("true".into()), None);
        assert_eq!(Deny::from_bool(false), Deny::Ignore);
    }
}
