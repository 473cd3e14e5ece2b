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
    /// `uploadpack.advertiseBundleURIs`: offer the v2 `bundle-uri` command.
    pub advertise_bundle_uris: bool,
    /// Every `bundle.*` setting as `key=value`, in config order, for `bundle-uri`.
    pub bundle_lines: Vec<BString>,
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
        let hide_refs = hide_refs(file, "uploadpack");
        let filters = FilterConfig::read(file);
        // bundle-uri sends the repository's `bundle.*` settings verbatim, keys in
        // git's canonical form: section and name lower-cased, subsection as written.
        let mut bundle_lines = Vec::new();
        for section in file.sections() {
            if !section.header().name().eq_ignore_ascii_case(b"bundle") {
                continue;
            }
            let sub = section
                .header()
                .subsection_name()
                .map(|s| format!("{}.", s.to_str_lossy()));
            let body = section.body();
            let mut seen: std::collections::HashMap<String, usize> = Default::default();
            for name in body.value_names() {
                let n = seen.entry(name.to_lowercase()).or_default();
                let value = body.values(&name).get(*n).cloned().unwrap_or_default();
                *n += 1;
                let mut line: BString = format!(
                    "bundle.{}{}=",
                    sub.as_deref().unwrap_or(""),
                    name.to_lowercase()
                )
                .into();
                line.extend_from_slice(&value);
                bundle_lines.push(line);
            }
        }
        UploadPackConfig {
            advertise_bundle_uris: flag("uploadpack.advertiseBundleURIs"),
            bundle_lines,
            allow: AllowUnadvertised {
                tip: any || flag("uploadpack.allowTipSHA1InWant"),
                reachable: any || flag("uploadpack.allowReachableSHA1InWant"),
                any,
            },
            hide_refs,
            allow_filter: flag("uploadpack.allowFilter"),
            filter_allow_default: filters.allow_default,
            filter_allow: filters.allow,
            tree_filter_max_depth: filters.tree_max_depth,
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
        ref_is_hidden(&self.hide_refs, refname)
    }

    /// Whether filter `name` (e.g. `blob:none` → `blob:none`, `tree:3` → `tree`) may
    /// be used: the last `uploadpackfilter.<name>.allow` (or `.tree.maxDepth`, which
    /// allows `tree`), else `uploadpackfilter.allow`.
    pub fn filter_allowed(&self, name: &str) -> bool {
        self.filter_allow
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or(self.filter_allow_default, |(_, on)| *on)
    }
}

/// The `uploadpackfilter.*` settings, read as git's `parse_object_filter_config`
/// reads them: in config order, later settings winning, subsection names compared
/// case-sensitively (`[uploadpackfilter "Tree"]` is not `tree`).
struct FilterConfig {
    allow_default: bool,
    allow: Vec<(String, bool)>,
    tree_max_depth: Option<u64>,
}

impl FilterConfig {
    fn read(file: &gix::config::File) -> Self {
        let mut cfg = FilterConfig {
            allow_default: true,
            allow: Vec::new(),
            tree_max_depth: None,
        };
        // git dies on a value it cannot parse; gitd keeps serving, and fails closed.
        let boolean = |v: Option<Option<BString>>| match v {
            Some(None) => true, // `allow` without `=` means true
            Some(Some(v)) => gix::config::Boolean::try_from(AsRef::<BStr>::as_ref(&v))
                .map(|b| b.0)
                .unwrap_or(false),
            None => false,
        };
        for section in file
            .sections_by_name("uploadpackfilter")
            .into_iter()
            .flatten()
        {
            let body = section.body();
            let Some(sub) = section.header().subsection_name() else {
                if body.contains_value_name("allow") {
                    cfg.allow_default = boolean(body.value_implicit("allow"));
                }
                continue;
            };
            let sub = sub.to_str_lossy().into_owned();
            // Within a section only the last `allow` and the last `maxDepth` count,
            // and of those two whichever comes later decides whether `tree` is allowed.
            let names: Vec<String> = body.value_names().map(|n| n.to_lowercase()).collect();
            let last = |key: &str| names.iter().rposition(|n| n == key);
            let (allow, depth) = (last("allow"), last("maxdepth").filter(|_| sub == "tree"));
            if let Some(d) = depth {
                let max = body
                    .value("maxDepth")
                    .and_then(|v| crate::pack::filter::parse_ulong(&v));
                if max.is_some() {
                    cfg.tree_max_depth = max;
                }
                if allow.is_none_or(|a| a < d) {
                    cfg.allow.push((sub, max.is_some()));
                    continue;
                }
            }
            if allow.is_some() {
                cfg.allow.push((sub, boolean(body.value_implicit("allow"))));
            }
        }
        cfg
    }
}

/// `transfer.hideRefs` and `<section>.hideRefs` (`uploadpack`, `receive`), in config
/// order: git reads both sections in one pass, so their values interleave.
pub fn hide_refs(file: &gix::config::File, section: &str) -> Vec<BString> {
    let mut out = Vec::new();
    for s in file.sections() {
        let name = s.header().name();
        if !(name.eq_ignore_ascii_case(b"transfer")
            || name.eq_ignore_ascii_case(section.as_bytes()))
        {
            continue;
        }
        for value in s.values("hideRefs") {
            let mut v: BString = value;
            while v.last() == Some(&b'/') {
                v.pop();
            }
            out.push(v);
        }
    }
    out
}

/// `refs.c: ref_is_hidden`: the last matching pattern decides; `!` negates, `^`
/// matches the full (un-namespaced) name, and a pattern matches the ref itself or
/// anything below it.
pub fn ref_is_hidden(patterns: &[BString], refname: &BStr) -> bool {
    for pattern in patterns.iter().rev() {
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

    #[test]
    fn filter_config_is_read_in_order() {
        let read = |text: &str| FilterConfig::read(&gix::config::File::try_from(text).unwrap());
        let cfg = read(
            "[uploadpackfilter]\n\tallow = false\n\
             [uploadpackfilter \"blob:none\"]\n\tallow\n\
             [uploadpackfilter \"Tree\"]\n\tallow = true\n\
             [uploadpackfilter \"tree\"]\n\tallow = false\n\tmaxDepth = 2k\n",
        );
        assert!(!cfg.allow_default);
        assert_eq!(cfg.tree_max_depth, Some(2048));
        let up = UploadPackConfig {
            filter_allow_default: cfg.allow_default,
            filter_allow: cfg.allow,
            ..Default::default()
        };
        assert!(up.filter_allowed("blob:none"));
        // maxDepth after allow = false allows tree filters again; "Tree" is another name.
        assert!(up.filter_allowed("tree"));
        assert!(!up.filter_allowed("blob:limit"));
        let cfg = read("[uploadpackfilter \"Tree\"]\n\tallow = false\n");
        assert_eq!(cfg.allow, vec![("Tree".to_string(), false)]);
        let cfg = read("[uploadpackfilter \"tree\"]\n\tmaxDepth = 1\n\tallow = false\n");
        assert_eq!(cfg.allow, vec![("tree".to_string(), false)]);
        assert_eq!(cfg.tree_max_depth, Some(1));
    }
}
