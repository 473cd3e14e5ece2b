"""Deterministic benchmark repositories, written as git fast-import streams.

Both repositories are built from real source text: the sources of the crates that
gitd's Cargo.lock names, as cargo unpacked them under $CARGO_HOME/registry/src
(present on any machine that built gitd; `cargo fetch` brings them back). For a
given Cargo.lock the streams, and so every object id, are the same on every
machine: files are read in sorted order, dates are fixed, and the edits come from
a self-contained PRNG (not Python's `random`, whose algorithms may change).

deep: a text tree of small source files, then N commits of 1-4 small line edits
      each (insert, replace or delete a line; new lines are real lines taken from
      the corpus), mostly to a hot tenth of the files; maintenance branches that
      fork, get commits and are merged back; an annotated tag every 1000 commits.
wide: one commit per crate, importing its whole source tree under `<crate>/`
      (a newer version of a crate replaces the older one, so it becomes an edit);
      an annotated tag every 40 commits and a `stable` branch. Large trees, large
      files, a large pack.

In both, the last `incremental` commits of `main` come after every other ref, so
a client that has `main~incremental` and all other refs is missing exactly those
commits: that is the incremental fetch case.
"""

import hashlib
import os
import re

MASK64 = (1 << 64) - 1


class Rng:
    """splitmix64: tiny, fast enough, and fixed forever."""

    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n

    def chance(self, percent):
        return self.below(100) < percent


def lock_crates(cargo_lock):
    """(name, version) of every registry package in Cargo.lock, in file order."""
    text = open(cargo_lock, encoding="utf-8").read()
    out = []
    for block in text.split("[[package]]")[1:]:
        name = re.search(r'^name = "([^"]+)"', block, re.M)
        version = re.search(r'^version = "([^"]+)"', block, re.M)
        source = re.search(r'^source = "registry\+', block, re.M)
        if name and version and source:
            out.append((name.group(1), version.group(1)))
    return out


def version_key(version):
    """Sort key for a semver string: numeric parts numerically, releases last."""
    core, _, pre = version.partition("-")
    nums = []
    for part in core.split("+")[0].split("."):
        nums.append(int(part) if part.isdigit() else 0)
    return (nums, pre == "", pre)


def find_crates(cargo_lock, cargo_home):
    """Source directories of the locked crates, sorted by name then version.

    Returns (found, missing), lists of (name, version, dir)."""
    src = os.path.join(cargo_home, "registry", "src")
    registries = sorted(os.listdir(src)) if os.path.isdir(src) else []
    found, missing = [], []
    for name, version in sorted(set(lock_crates(cargo_lock)), key=lambda c: (c[0], version_key(c[1]))):
        for reg in registries:
            d = os.path.join(src, reg, f"{name}-{version}")
            if os.path.isdir(d):
                found.append((name, version, d))
                break
        else:
            missing.append((name, version, None))
    return found, missing


# Files that cargo writes itself when unpacking (not part of the crate).
SKIP_FILES = {".cargo-ok"}
MAX_FILE = 2 * 1024 * 1024


def crate_files(crate_dir):
    """Sorted (relative path, bytes) of the regular files of a crate."""
    out = []
    for dirpath, dirnames, filenames in os.walk(crate_dir):
        dirnames.sort()
        for fn in sorted(filenames):
            if fn in SKIP_FILES:
                continue
            p = os.path.join(dirpath, fn)
            if os.path.islink(p) or not os.path.isfile(p) or os.path.getsize(p) > MAX_FILE:
                continue
            with open(p, "rb") as f:
                out.append((os.path.relpath(p, crate_dir).replace(os.sep, "/"), f.read()))
    out.sort()
    return out


class Stream:
    """Writes a fast-import stream to `out` and hashes it."""

    def __init__(self, out):
        self.out = out
        self.sha = hashlib.sha256()
        self.mark = 0
        self.time = 1_600_000_000
        self.commits = 0

    def write(self, b):
        self.out.write(b)
        self.sha.update(b)

    def data(self, b):
        self.write(b"data %d\n" % len(b))
        self.write(b)
        self.write(b"\n")

    def commit(self, ref, msg, changes=(), deletes=(), parent=None, merges=()):
        """changes: (path, bytes); returns the commit's mark."""
        self.mark += 1
        self.commits += 1
        self.time += 600
        self.write(b"commit %s\nmark :%d\n" % (ref.encode(), self.mark))
        self.write(b"author Bench Author <author@example.com> %d +0000\n" % self.time)
        self.write(b"committer Bench Committer <committer@example.com> %d +0000\n" % self.time)
        self.data(msg.encode())
        if parent is not None:
            self.write(b"from :%d\n" % parent)
        for m in merges:
            self.write(b"merge :%d\n" % m)
        for p in deletes:
            self.write(b"D %s\n" % p.encode())
        for p, content in changes:
            self.write(b"M 100644 inline %s\n" % p.encode())
            self.data(content)
        self.write(b"\n")
        return self.mark

    def tag(self, name, mark, msg):
        self.write(b"tag %s\nfrom :%d\n" % (name.encode(), mark))
        self.write(b"tagger Bench Tagger <tagger@example.com> %d +0000\n" % self.time)
        self.data(msg.encode())

    def branch(self, ref, mark):
        self.write(b"reset %s\nfrom :%d\n\n" % (ref.encode(), mark))

    def done(self):
        self.write(b"done\n")


def deep(out, crates, commits=20000, files=1500, incremental=5, seed=1):
    """The deep history. Returns the stream's sha256 and its commit count."""
    s = Stream(out)
    rng = Rng(seed)
    # The corpus: small text sources, spread evenly over all crates.
    candidates = []
    for name, _version, d in crates:
        for rel, content in crate_files(d):
            if rel.endswith((".rs", ".md", ".toml")) and 512 <= len(content) <= 16384:
                candidates.append((f"{name}/{rel}", content))
    if not candidates:
        raise SystemExit("no source files found for the deep repository")
    step = max(1, len(candidates) // files)
    corpus = candidates[::step][:files]
    paths = [p for p, _ in corpus]
    main = {p: c.split(b"\n") for p, c in corpus}
    pool = [line for _, c in corpus for line in c.split(b"\n") if line.strip()]
    hot = [paths[rng.below(len(paths))] for _ in range(max(1, len(paths) // 10))]

    def edit(files_of):
        """Edit 1-4 files of a branch state; returns the changed paths, sorted."""
        changed = set()
        for _ in range(1 + rng.below(4)):
            p = hot[rng.below(len(hot))] if rng.chance(80) else paths[rng.below(len(paths))]
            lines = files_of[p] = list(files_of[p])
            pos = rng.below(len(lines))
            op = rng.below(10)
            new = pool[rng.below(len(pool))]
            if op < 5:
                lines.insert(pos, new)
            elif op < 8:
                lines[pos] = new
            elif len(lines) > 1:
                del lines[pos]
            changed.add(p)
        return sorted(changed)

    last = s.commit("refs/heads/main", "Import sources\n", [(p, b"\n".join(main[p])) for p in paths])
    forks = {commits * k // 4: None for k in (1, 2, 3)}  # fork point -> branch state
    side = {}  # branch name -> (state, last mark, changed paths, merge at)
    for i in range(1, commits + 1):
        changed = edit(main)
        merges = []
        for name, (state, mark, touched, merge_at) in list(side.items()):
            if merge_at == i:
                # Merge the branch: its versions of what it touched win.
                for p in touched:
                    main[p] = list(state[p])
                changed = sorted(set(changed) | touched)
                merges.append(mark)
                del side[name]
        msg = f"Change {i}\n\nEdit {', '.join(changed[:4])}.\n"
        last = s.commit("refs/heads/main", msg, [(p, b"\n".join(main[p])) for p in changed], parent=None, merges=merges)
        if i % 1000 == 0 and i <= commits - 2 * incremental:
            s.tag(f"v{i // 1000}.0", last, f"Release {i // 1000}.0\n")
        if i in forks:
            name = f"maint-{i}"
            state = dict(main)
            mark = last
            touched = set()
            for j in range(20):
                ch = edit(state)
                touched.update(ch)
                mark = s.commit(f"refs/heads/{name}", f"{name}: fix {j}\n", [(p, b"\n".join(state[p])) for p in ch], parent=mark)
            # The last fork stays unmerged.
            merge_at = i + 500 if i < max(forks) else None
            side[name] = (state, mark, touched, merge_at)
    s.done()
    return s.sha.hexdigest(), s.commits


def wide(out, crates, incremental=3):
    """The wide history. Returns the stream's sha256 and its commit count."""
    s = Stream(out)
    last = None
    present = {}  # crate name -> paths of its current version
    n = len(crates)
    for i, (name, version, d) in enumerate(crates, 1):
        files = [(f"{name}/{rel}", content) for rel, content in crate_files(d)]
        new_paths = {p for p, _ in files}
        deletes = sorted(present.get(name, set()) - new_paths)
        present[name] = new_paths
        last = s.commit("refs/heads/main", f"Import {name} {version}\n", files, deletes, parent=last)
        if i <= n - 2 * incremental:
            if i % 40 == 0:
                s.tag(f"w{i // 40}", last, f"Snapshot {i // 40}\n")
            if i == (2 * n) // 3:
                s.branch("refs/heads/stable", last)
    s.done()
    return s.sha.hexdigest(), s.commits
