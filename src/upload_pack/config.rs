//! Per-repository `uploadpack.*` settings, read from the served repository's config
//! the way git's upload-pack reads them.

use gix::bstr::{BStr, BString, ByteSlice};

/// Which wants that are not advertised ref tips a client may ask for
/// (`uploadpack.allow*SHA1InWant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllowUnadvertised {
    /// Tips of hidden refs.
    pub tip: bool,
    /// Anything reachable from a ref, hidden or not.
    pub reachable: bool,
    /// Any object at all.
    pub any: bool,
}

/// The upload-pack configuration of one repository.
#[derive(Debug, Clone, Default)]
pub struct UploadPackConfig {
    pub allow: AllowUnadvertised,
    /// `transfer.hideRefs` and `uploadpack.hideRefs`, in config order.
    pub hide_refs: Vec<BString>,
    /// `uploadpack.allowFilter`.
    pub allow_filter: bool,
    /// `uploadpackfilter.allow` (default true) and `uploadpackfilter.<name>.allow`.
    pub filter_allow_default: bool,
    pub filter_allow: Vec<(String, bool)>,
    /// `uploadpackfilter.tree.maxDepth`.
    pub tree_filter_max_depth: Option<u64>,
    /// `uploadpack.allowRefInWant`.
    pub allow_ref_in_want: bool,
    /// `uploadpack.allowSidebandAll`.
    pub allow_sideband_all: bool,
    /// `lsrefs.unborn`: advertise (default), allow, or ignore.
    pub unborn: Unborn,
}

/// `lsrefs.unborn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unborn {
    #[default]
    Advertise,
    Allow,
    Ignore,
}

impl UploadPackConfig {
    pub fn from_repo(repo: &gix::Repository) -> Self {
        let snapshot = repo.config_snapshot();
        let file = snapshot.plumbing();
        let flag = |key: &str| snapshot.boolean(key).unwrap_or(false);
        let any = flag("uploadpack.allowAnySHA1InWant");
        let mut hide_refs = Vec::new();
        // git reads both sections in one pass, so their values interleave in file order.
        for section in file.sections() {
            let name = section.header().name();
            if !(name.eq_ignore_ascii_case(b"transfer") || name.eq_ignore_ascii_case(b"uploadpack"))
            {
                continue;
            }
            for value in section.values("hideRefs") {
                let mut v: BString = value;
                while v.last() == Some(&b'/') {
                    v.pop();
                }
                hide_refs.push(v);
            }
        }
        let mut filter_allow = Vec::new();
        for section in file
            .sections_by_name("uploadpackfilter")
            .into_iter()
            .flatten()
        {
            if let Some(sub) = section.header().subsection_name()
                && let Some(v) = section.value("allow")
            {
                let on = gix::config::Boolean::try_from(AsRef::<BStr>::as_ref(&v))
                    .map(|b| b.0)
                    .unwrap_or(false);
                filter_allow.push((sub.to_str_lossy().to_lowercase(), on));
            }
        }
        UploadPackConfig {
            allow: AllowUnadvertised {
                tip: any || flag("uploadpack.allowTipSHA1InWant"),
                reachable: any || flag("uploadpack.allowReachableSHA1InWant"),
                any,
            },
            hide_refs,
            allow_filter: flag("uploadpack.allowFilter"),
            filter_allow_default: snapshot.boolean("uploadpackfilter.allow").unwrap_or(true),
            filter_allow,
            tree_filter_max_depth: snapshot
                .integer("uploadpackfilter.tree.maxDepth")
                .map(|d| d.max(0) as u64),
            allow_ref_in_want: flag("uploadpack.allowRefInWant"),
            allow_sideband_all: flag("uploadpack.allowSidebandAll"),
            unborn: match snapshot
                .string("lsrefs.unborn")
                .as_deref()
                .map(|s| s.as_bytes())
            {
                Some(b"allow") => Unborn::Allow,
                Some(b"ignore") => Unborn::Ignore,
                _ => Unborn::Advertise,
            },
        }
    }

    /// `refs.c: ref_is_hidden`: the last matching pattern decides; `!` negates, `^`
    /// matches the full (un-namespaced) name, and a pattern matches the ref itself or
    /// anything below it.
    pub fn is_hidden(&self, refname: &BStr) -> bool {
        for pattern in self.hide_refs.iter().rev() {
            let (neg, pattern) = match pattern.strip_prefix(b"!") {
                Some(p) => (true, p),
                None => (false, pattern.as_slice()),
            };
            let pattern = pattern.strip_prefix(b"^").unwrap_or(pattern);
            if let Some(rest) = refname.strip_prefix(pattern)
                && (rest.is_empty() || rest[0] == b'/')
            {
                return !neg;
            }
        }
        false
    }

    /// Whether filter `name` (e.g. `blob:none` → `blob:none`, `tree:3` → `tree`) may
    /// be used: `uploadpackfilter.<name>.allow`, else `uploadpackfilter.allow`.
    pub fn filter_allowed(&self, name: &str) -> bool {
        self.filter_allow
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or(self.filter_allow_default, |(_, on)| *on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_refs_follow_git_rules() {
        let cfg = UploadPackConfig {
            hide_refs: vec![
                "refs/hidden".into(),
                "!refs/hidden/visible".into(),
                "^refs/full".into(),
            ],
            ..Default::default()
        };
        assert!(cfg.is_hidden("refs/hidden".into()));
        assert!(cfg.is_hidden("refs/hidden/x".into()));
        assert!(!cfg.is_hidden("refs/hidden/visible".into()));
        assert!(!cfg.is_hidden("refs/hiddenx".into()));
        assert!(cfg.is_hidden("refs/full/a".into()));
        assert!(!cfg.is_hidden("refs/heads/main".into()));
    }

    #[test]
    fn filter_allow_lists() {
        let mut cfg = UploadPackConfig {
            filter_allow_default: true,
            ..Default::default()
        };
        assert!(cfg.filter_allowed("blob:none"));
        cfg.filter_allow_default = false;
        cfg.filter_allow.push(("blob:none".into(), true));
        assert!(cfg.filter_allowed("blob:none"));
        assert!(!cfg.filter_allowed("tree"));
    }
}
