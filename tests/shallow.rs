//! Shallow clones and fetches (`deepen`, `deepen-since`, `deepen-not`,
//! `deepen-relative` and the client's `shallow` lines). Each operation runs with the
//! real git client against gitd and, the same way, against `git upload-pack` (a
//! `file://` URL): the two clients must end up with the same shallow boundary, refs
//! and objects. `shallow_protocol.rs` compares the protocol lines themselves.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{Gitd, add_commits, fixture, git, git_bounded, merge_depth, rev, scratch};

/// No git command of these tests may take longer: a hang fails the test.
const LIMIT: Duration = Duration::from_secs(120);
const VERSIONS: [&str; 3] = ["0", "1", "2"];

/// Run git (bounded); panic with its stderr unless it succeeds.
fn run(dir: &Path, args: &[&str]) -> String {
    let out = git_bounded(dir, args, LIMIT);
    assert!(
        out.status.success(),
        "git {args:?} in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sorted(out: String) -> Vec<String> {
    let mut v: Vec<String> = out.lines().map(str::to_owned).collect();
    v.sort();
    v
}

struct Ctx {
    dir: PathBuf,
    repo: PathBuf,
    gitd: Gitd,
}

fn setup(name: &str) -> Ctx {
    let dir = scratch(name);
    let repo = fixture(&dir, "repo.git", 40);
    let gitd = Gitd::start(&dir, &[&format!("--base-path={}", dir.display())]);
    Ctx { dir, repo, gitd }
}

/// A clone from gitd and the same clone from the oracle.
struct Pair {
    v: &'static str,
    dirs: [PathBuf; 2],
}

impl Ctx {
    /// `git clone <args>` over protocol `v`, from gitd and from `git upload-pack`.
    fn clone(&self, v: &'static str, name: &str, args: &[&str]) -> Pair {
        let urls = [
            self.gitd.url("/repo.git"),
            format!("file://{}", self.repo.display()),
        ];
        let dirs = ["gitd", "git"].map(|who| self.dir.join(format!("{name}-v{v}-{who}")));
        for (url, dest) in urls.iter().zip(&dirs) {
            let proto = format!("protocol.version={v}");
            let mut a = vec!["-c", &proto, "clone", "-q"];
            a.extend_from_slice(args);
            a.extend([url.as_str(), dest.to_str().unwrap()]);
            run(&self.dir, &a);
        }
        Pair { v, dirs }
    }
}

impl Pair {
    /// Run the same git command in both clones (each talks to its own server).
    fn both(&self, args: &[&str]) {
        let proto = format!("protocol.version={}", self.v);
        for d in &self.dirs {
            let mut a = vec!["-c", proto.as_str()];
            a.extend_from_slice(args);
            run(d, &a);
        }
    }

    /// Compare what the two clients hold, and check both with `git fsck`.
    fn assert_same(&self, what: &str) -> State {
        let [ours, theirs] = self.dirs.each_ref().map(|d| state(d));
        let what = format!("{what} (protocol v{})", self.v);
        assert_sets(
            &ours.shallow,
            &theirs.shallow,
            &format!("{what}: .git/shallow"),
        );
        assert_sets(&ours.refs, &theirs.refs, &format!("{what}: refs"));
        assert_sets(
            &ours.reachable,
            &theirs.reachable,
            &format!("{what}: reachable objects"),
        );
        // Every object received. gitd leaves out whatever is in the trees of the
        // commits the client has, git only what its (sparse) walk finds there, so
        // this could differ after renames; for these histories it must not.
        assert_sets(&ours.stored, &theirs.stored, &format!("{what}: objects"));
        ours
    }
}

/// What a client holds after a fetch.
struct State {
    shallow: Vec<String>,
    refs: Vec<String>,
    /// `rev-list --objects --all`: what the refs reach, down to the shallow boundary.
    reachable: Vec<String>,
    /// Every object in the object store.
    stored: Vec<String>,
}

fn state(repo: &Path) -> State {
    // fsck --full understands shallow repositories: it must find nothing missing.
    run(repo, &["fsck", "--full", "--no-dangling"]);
    let shallow_file = run(repo, &["rev-parse", "--git-path", "shallow"]);
    let shallow = std::fs::read_to_string(repo.join(shallow_file.trim())).unwrap_or_default();
    let reachable = run(repo, &["rev-list", "--objects", "--all"])
        .lines()
        .map(|l| l[..40].to_string())
        .collect::<Vec<_>>()
        .join("\n");
    State {
        shallow: sorted(shallow),
        refs: sorted(run(
            repo,
            &["for-each-ref", "--format=%(objectname) %(refname)"],
        )),
        reachable: sorted(reachable),
        stored: sorted(run(
            repo,
            &[
                "cat-file",
                "--batch-all-objects",
                "--batch-check=%(objectname)",
            ],
        )),
    }
}

/// Equal sorted lists, reporting only the difference.
fn assert_sets(ours: &[String], theirs: &[String], what: &str) {
    if ours != theirs {
        let only_ours: Vec<_> = ours.iter().filter(|x| !theirs.contains(x)).collect();
        let only_theirs: Vec<_> = theirs.iter().filter(|x| !ours.contains(x)).collect();
        panic!(
            "{what} differ ({} vs {}): only from gitd {only_ours:?}, only from git {only_theirs:?}",
            ours.len(),
            theirs.len()
        );
    }
}

#[test]
fn depth_clones_match_git() {
    let ctx = setup("depth-clone");
    for v in VERSIONS {
        let pair = ctx.clone(v, "d1", &["--depth", "1"]);
        let s = pair.assert_same("--depth 1");
        assert_eq!(s.shallow, vec![rev(&ctx.repo, "main")]);

        let pair = ctx.clone(v, "d5", &["--depth", "5", "--no-single-branch"]);
        let s = pair.assert_same("--depth 5 --no-single-branch");
        assert!(s.shallow.len() >= 2, "every branch has a boundary");
    }
}

#[test]
fn shallow_since_clones_match_git() {
    let ctx = setup("since-clone");
    let since = format!(
        "--shallow-since=@{}",
        git(&ctx.repo, &["log", "-1", "--format=%ct", "main~8"]).trim()
    );
    for v in VERSIONS {
        let pair = ctx.clone(v, "since", &[&since]);
        let s = pair.assert_same("--shallow-since");
        assert!(!s.shallow.is_empty());
        // `side` is older than the cut-off: git finds no boundary in it and sends
        // its whole history, and so must we.
        let pair = ctx.clone(v, "since-all", &[&since, "--no-single-branch"]);
        pair.assert_same("--shallow-since --no-single-branch");
    }
}

#[test]
fn shallow_exclude_clones_match_git() {
    let ctx = setup("exclude-clone");
    for v in VERSIONS {
        for (name, args) in [
            ("topic", &["--shallow-exclude=topic"][..]),
            ("side", &["--shallow-exclude=side"][..]),
            // An annotated tag, and two refs at once.
            (
                "tags",
                &["--shallow-exclude=v1.0", "--shallow-exclude=light"][..],
            ),
            (
                "all",
                &["--shallow-exclude=refs/heads/topic", "--no-single-branch"][..],
            ),
        ] {
            let pair = ctx.clone(v, &format!("ex-{name}"), args);
            let s = pair.assert_same(&format!("{args:?}"));
            assert!(!s.shallow.is_empty(), "{args:?}");
        }
    }
}

#[test]
fn fetch_into_a_shallow_clone_matches_git() {
    let ctx = setup("fetch-shallow");
    let pairs: Vec<Pair> = VERSIONS
        .iter()
        .map(|v| ctx.clone(v, "f", &["--depth", "1", "--no-single-branch"]))
        .collect();
    add_commits(&ctx.repo, "main", 3, "first");
    add_commits(&ctx.repo, "side", 1, "side");
    for pair in &pairs {
        pair.both(&["fetch", "-q"]);
        let s = pair.assert_same("fetch after new commits");
        assert!(!s.shallow.is_empty(), "the old boundary stays");
    }
    add_commits(&ctx.repo, "main", 2, "second");
    for pair in &pairs {
        // A new depth counted from the new tips: old boundaries go away.
        pair.both(&["fetch", "-q", "--depth", "2"]);
        pair.assert_same("fetch --depth 2");
        pair.both(&["fetch", "-q", "--depth", "6"]);
        pair.assert_same("fetch --depth 6");
    }
}

#[test]
fn fetch_of_another_branch_into_a_shallow_clone_matches_git() {
    // `side` forks from main below the client's boundary: git must not take the
    // client's `have main` for having main's history, since the client's shallow
    // commit cuts it there. So side comes with all of its history.
    let ctx = setup("fetch-other");
    for v in VERSIONS {
        let pair = ctx.clone(v, "o", &["--depth", "1"]);
        pair.both(&["fetch", "-q", "origin", "side:refs/remotes/origin/side"]);
        let s = pair.assert_same("fetch of a branch forked below the boundary");
        assert_eq!(s.shallow, vec![rev(&ctx.repo, "main")]);
        pair.both(&[
            "fetch",
            "-q",
            "--depth",
            "2",
            "origin",
            "topic:refs/remotes/origin/topic",
        ]);
        pair.assert_same("fetch --depth 2 of another branch");
    }
}

#[test]
fn deepen_and_unshallow_match_git() {
    let ctx = setup("deepen");
    for v in VERSIONS {
        let pair = ctx.clone(v, "deepen", &["--depth", "2"]);
        // deepen-relative: three more commits below the current boundary.
        pair.both(&["fetch", "-q", "--deepen=3"]);
        let s = pair.assert_same("fetch --deepen=3");
        assert_eq!(s.shallow, vec![rev(&ctx.repo, "main~4")]);
        pair.both(&["fetch", "-q", "--deepen=1"]);
        pair.assert_same("fetch --deepen=1");
        pair.both(&["fetch", "-q", "--unshallow"]);
        let s = pair.assert_same("fetch --unshallow");
        assert!(s.shallow.is_empty());
        let full = git(&ctx.repo, &["rev-list", "--objects", "main"])
            .lines()
            .count();
        assert!(s.reachable.len() >= full, "unshallowed: all of main");
    }
}

#[test]
fn deepen_since_and_exclude_fetches_match_git() {
    let ctx = setup("deepen-rev-list");
    let since = format!(
        "--shallow-since=@{}",
        git(&ctx.repo, &["log", "-1", "--format=%ct", "main~6"]).trim()
    );
    for v in VERSIONS {
        let pair = ctx.clone(v, "rl", &["--depth", "1"]);
        pair.both(&["fetch", "-q", &since]);
        let s = pair.assert_same("fetch --shallow-since");
        assert!(s.shallow.len() == 1 && s.shallow[0] != rev(&ctx.repo, "main"));
        pair.both(&["fetch", "-q", "--shallow-exclude=side"]);
        pair.assert_same("fetch --shallow-exclude");
    }
}

#[test]
fn shallow_history_with_merges_matches_git() {
    let ctx = setup("merges");
    let (merge, above) = merge_depth(&ctx.repo);
    for v in VERSIONS {
        // The boundary falls just below the merge, on both of its sides.
        let depth = (above + 2).to_string();
        let pair = ctx.clone(v, "m", &["--depth", &depth]);
        let s = pair.assert_same("clone across a merge");
        assert_eq!(s.shallow.len(), 2, "one boundary per parent of {merge}");
        pair.both(&["fetch", "-q", "--deepen=1"]);
        pair.assert_same("--deepen across a merge");
        // A depth that ends on the merge itself, then one that ends above it.
        for d in [above + 1, above] {
            pair.both(&["fetch", "-q", "--depth", &d.to_string()]);
            pair.assert_same(&format!("fetch --depth {d} across a merge"));
        }
        pair.both(&["fetch", "-q", "--deepen=4"]);
        pair.assert_same("--deepen=4 across a merge");
    }
}
