//! Which directories `--reload` watches and which changed files trigger a reload, with
//! uvicorn's meaning of `--reload-dir`, `--reload-include` and `--reload-exclude` (its
//! WatchFiles reloader, uvicorn 0.54), so a command line moved over from uvicorn reloads
//! on the same files.
//!
//! Patterns match as Python's `PurePath.match` does: a relative pattern is compared, one
//! path component at a time with `fnmatch` rules, against the *last* components of the
//! path (`*.py` matches any Python file at any depth, `pkg/*.py` one in a `pkg`
//! directory); an absolute pattern must match the whole path.

use super::ReloadOptions;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// uvicorn's default include: Python sources.
const DEFAULT_INCLUDES: [&str; 1] = ["*.py"];
/// uvicorn's default excludes: hidden files, compiled Python, editor swap and backup files.
const DEFAULT_EXCLUDES: [&str; 4] = [".*", ".py[cod]", ".sw.*", "~*"];

/// What to watch and how to judge a changed path.
#[derive(Debug)]
pub struct WatchPlan {
    /// Absolute, none inside another (a recursive watch of the outer one covers it).
    pub dirs: Vec<PathBuf>,
    pub filter: FileFilter,
    /// `--reload-dir` values that named no directory.
    pub ignored_dirs: Vec<String>,
    /// --reload-dir was given, yet nothing of it is left to watch (missing, or
    /// excluded): the current directory is watched instead, as uvicorn does.
    pub fell_back_to_cwd: bool,
}

#[derive(Debug)]
pub struct FileFilter {
    includes: Vec<String>,
    excludes: Vec<String>,
    /// `--reload-exclude` values that are directories: nothing below them reloads.
    exclude_dirs: Vec<PathBuf>,
}

impl WatchPlan {
    /// `cwd` is the directory relative values are taken from (the master's own), and
    /// `app_dir` the `--app-dir`, watched too when it lies outside `cwd`.
    pub fn new(options: &ReloadOptions, cwd: &Path, app_dir: &Path) -> WatchPlan {
        let (mut includes, include_dirs) = patterns_and_dirs(&options.reload_includes, cwd);
        let (excludes, exclude_dirs) = patterns_and_dirs(&options.reload_excludes, cwd);

        let mut given_dirs = Vec::new();
        let mut ignored_dirs = Vec::new();
        for dir in &options.reload_dirs {
            let path = absolute(cwd, Path::new(dir));
            if path.is_dir() {
                given_dirs.push(path);
            } else {
                ignored_dirs.push(dir.clone());
            }
        }
        let mut dirs = outermost([given_dirs, include_dirs].concat());
        // An excluded directory takes the watched directories at or below it with it.
        dirs.retain(|d| !exclude_dirs.iter().any(|x| d.starts_with(x)));
        let fell_back_to_cwd = dirs.is_empty() && !options.reload_dirs.is_empty();
        if dirs.is_empty() {
            dirs.push(cwd.to_path_buf());
            // uvicorn watches only the current directory; an --app-dir outside it holds
            // the code being served, so a change there must reload too.
            let app_dir = absolute(cwd, app_dir);
            if options.reload_dirs.is_empty() && !app_dir.starts_with(cwd) && app_dir.is_dir() {
                dirs.push(app_dir);
            }
        }

        // A pattern both included and excluded is excluded.
        includes.retain(|p| !excludes.contains(p));
        let mut all_includes: Vec<String> = DEFAULT_INCLUDES
            .iter()
            .filter(|d| !excludes.iter().any(|e| e == *d))
            .map(|d| d.to_string())
            .collect();
        all_includes.extend(includes.iter().cloned());
        let mut all_excludes: Vec<String> = DEFAULT_EXCLUDES
            .iter()
            .filter(|d| !includes.iter().any(|i| i == *d))
            .map(|d| d.to_string())
            .collect();
        for pattern in excludes {
            let is_dir = absolute(cwd, Path::new(&pattern)).is_dir();
            if !is_dir {
                all_excludes.push(pattern);
            }
        }
        dedup(&mut all_includes);
        dedup(&mut all_excludes);
        WatchPlan {
            dirs,
            filter: FileFilter {
                includes: all_includes,
                excludes: all_excludes,
                exclude_dirs,
            },
            ignored_dirs,
            fell_back_to_cwd,
        }
    }

    /// The directories as uvicorn's startup line shows them: a Python list of strings.
    pub fn dirs_for_log(&self) -> String {
        let mut names: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        names.sort();
        python_list(&names)
    }
}

/// How Python prints a list of strings (uvicorn's log lines do): `['a', 'b']`.
pub fn python_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", quoted.join(", "))
}

impl FileFilter {
    /// Whether a change to `path` (absolute) should reload, as uvicorn's `FileFilter`.
    pub fn wants(&self, path: &Path) -> bool {
        let text = path.to_string_lossy();
        for include in &self.includes {
            if !path_matches(path, include) {
                continue;
            }
            // A pattern naming the file itself (its full name or path) wins over excludes.
            if text.ends_with(include.as_str()) {
                return true;
            }
            if self.exclude_dirs.iter().any(|d| path.starts_with(d)) {
                return false;
            }
            return !self.excludes.iter().any(|e| path_matches(path, e));
        }
        false
    }
}

/// uvicorn's `resolve_reload_patterns`: every value stays a pattern, and the values that
/// are directories (or glob to directories in `cwd`) are also returned as directories,
/// absolute and without nesting. `.*` is never taken as a directory glob, or every
/// hidden directory would be watched (or excluded).
fn patterns_and_dirs(values: &[String], cwd: &Path) -> (Vec<String>, Vec<PathBuf>) {
    let mut dirs = Vec::new();
    for value in values {
        if value == ".*" {
            continue;
        }
        let path = absolute(cwd, Path::new(value));
        if path.is_dir() {
            dirs.push(path);
        } else {
            dirs.extend(glob_dirs(cwd, value));
        }
    }
    let mut patterns = values.to_vec();
    dedup(&mut patterns);
    (patterns, outermost(dirs))
}

/// Directories below `cwd` whose relative path matches `pattern` component by component
/// (Python's `Path.glob` without `**`).
fn glob_dirs(cwd: &Path, pattern: &str) -> Vec<PathBuf> {
    if pattern.starts_with('/') {
        return Vec::new();
    }
    let mut found = vec![cwd.to_path_buf()];
    for part in pattern.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let mut next = Vec::new();
        for dir in &found {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if fnmatch(part, &entry.file_name().to_string_lossy()) {
                    next.push(entry.path());
                }
            }
        }
        found = next;
    }
    found.retain(|p| p.is_dir() && p != cwd);
    found
}

/// The given directories, canonical where possible, without those inside another.
fn outermost(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    let set: BTreeSet<PathBuf> = dirs
        .into_iter()
        .map(|d| std::fs::canonicalize(&d).unwrap_or(d))
        .collect();
    set.iter()
        .filter(|d| !set.iter().any(|other| other != *d && d.starts_with(other)))
        .cloned()
        .collect()
}

fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    let joined = cwd.join(path);
    std::fs::canonicalize(&joined).unwrap_or(joined)
}

fn dedup(values: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    values.retain(|v| seen.insert(v.clone()));
}

/// `PurePath(path).match(pattern)` on POSIX.
pub fn path_matches(path: &Path, pattern: &str) -> bool {
    let pattern_path = Path::new(pattern);
    let wanted: Vec<String> = parts(pattern_path);
    if wanted.is_empty() {
        return false;
    }
    let have: Vec<String> = parts(path);
    if pattern_path.is_absolute() {
        if have.len() != wanted.len() {
            return false;
        }
    } else if wanted.len() > have.len() {
        return false;
    }
    wanted
        .iter()
        .rev()
        .zip(have.iter().rev())
        .all(|(p, name)| fnmatch(p, name))
}

fn parts(path: &Path) -> Vec<String> {
    path.components()
        .filter_map(|c| match c {
            Component::RootDir => Some("/".to_string()),
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Python's `fnmatch.fnmatchcase`: `*` any run, `?` one character, `[abc]`, `[a-z]`,
/// `[!abc]` a set; a `[` without its `]` is literal.
pub fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with one backtrack point for the last `*`: linear for the
    // patterns people write, never exponential.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, len)) = match_set(&p[pi..], n[ni]) {
                        if matched {
                            pi += len;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A `[...]` set at the start of `p`: whether `c` is in it, and the set's length; None
/// when the `[` has no closing `]` (then it is a literal `[`).
fn match_set(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = p.get(i) == Some(&'!');
    if negate {
        i += 1;
    }
    // A `]` right after `[` or `[!` is a member, not the end.
    let start = i;
    let mut end = None;
    let mut j = start;
    while j < p.len() {
        if p[j] == ']' && j > start {
            end = Some(j);
            break;
        }
        j += 1;
    }
    let end = end?;
    let members = &p[start..end];
    let mut found = false;
    let mut k = 0;
    while k < members.len() {
        if k + 2 < members.len() && members[k + 1] == '-' {
            if members[k] <= c && c <= members[k + 2] {
                found = true;
            }
            k += 3;
        } else {
            if members[k] == c {
                found = true;
            }
            k += 1;
        }
    }
    Some((found != negate, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_follows_python() {
        assert!(fnmatch("*.py", "main.py"));
        assert!(!fnmatch("*.py", "main.pyc"));
        assert!(fnmatch(".py[cod]", ".pyc"));
        assert!(!fnmatch(".py[cod]", "x.pyc"));
        assert!(fnmatch(".sw.*", ".sw.x"));
        assert!(fnmatch("~*", "~main.py"));
        assert!(fnmatch(".*", ".main.py.swp"));
        assert!(fnmatch("[!a]b", "xb"));
        assert!(!fnmatch("[!a]b", "ab"));
        assert!(fnmatch("[a-c]?", "bz"));
        assert!(fnmatch("[]]", "]"));
        assert!(fnmatch("a[b", "a[b"));
        assert!(fnmatch("*a*b*c", "xxaxxbxxc"));
        assert!(!fnmatch("*a*b*c", "xxaxxbxx"));
        assert!(fnmatch("*", ""));
        assert!(!fnmatch("?", ""));
    }

    #[test]
    fn path_match_is_purepath_match() {
        let p = Path::new("/srv/app/pkg/views.py");
        assert!(path_matches(p, "*.py"));
        assert!(path_matches(p, "pkg/*.py"));
        assert!(!path_matches(p, "app/*.py"));
        assert!(path_matches(p, "/srv/app/pkg/*.py"));
        assert!(!path_matches(p, "/app/pkg/*.py"));
        assert!(!path_matches(p, ""));
        assert!(!path_matches(Path::new("/a/.git/x.py"), ".*"));
    }

    fn options(includes: &[&str], excludes: &[&str]) -> ReloadOptions {
        ReloadOptions {
            reload: true,
            reload_dirs: vec![],
            reload_includes: includes.iter().map(|s| s.to_string()).collect(),
            reload_excludes: excludes.iter().map(|s| s.to_string()).collect(),
            reload_delay: 0.25,
        }
    }

    #[test]
    fn defaults_are_uvicorns() {
        let cwd = std::env::temp_dir();
        let plan = WatchPlan::new(&options(&[], &[]), &cwd, &cwd);
        let f = &plan.filter;
        assert!(f.wants(Path::new("/x/main.py")));
        assert!(!f.wants(Path::new("/x/index.html")));
        assert!(!f.wants(Path::new("/x/.main.py")));
        assert!(!f.wants(Path::new("/x/~main.py")));
        assert!(!f.wants(Path::new("/x/__pycache__/main.cpython-311.pyc")));
        assert_eq!(plan.dirs, vec![std::fs::canonicalize(&cwd).unwrap_or(cwd)]);
    }

    #[test]
    fn includes_add_and_excludes_remove() {
        let cwd = std::env::temp_dir();
        let plan = WatchPlan::new(&options(&["*.html"], &["test_*.py"]), &cwd, &cwd);
        let f = &plan.filter;
        assert!(f.wants(Path::new("/x/index.html")));
        assert!(f.wants(Path::new("/x/main.py")));
        assert!(!f.wants(Path::new("/x/test_main.py")));

        // Excluding the default include turns Python files off.
        let plan = WatchPlan::new(&options(&["*.html"], &["*.py"]), &cwd, &cwd);
        assert!(!plan.filter.wants(Path::new("/x/main.py")));
        assert!(plan.filter.wants(Path::new("/x/index.html")));

        // Including a default exclude turns it back on.
        let plan = WatchPlan::new(&options(&[".*"], &[]), &cwd, &cwd);
        assert!(plan.filter.wants(Path::new("/x/.env")));
    }

    #[test]
    fn directories_as_includes_and_excludes() {
        let root = std::env::temp_dir().join(format!("ferrocorn-filter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::create_dir_all(root.join("vendor")).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        let outside =
            std::env::temp_dir().join(format!("ferrocorn-outside-{}", std::process::id()));
        std::fs::create_dir_all(&outside).unwrap();
        let outside = std::fs::canonicalize(&outside).unwrap();

        let mut opts = options(&[outside.to_str().unwrap()], &["vendor"]);
        opts.reload_dirs = vec!["src".into(), "missing".into()];
        let plan = WatchPlan::new(&opts, &root, &root);
        assert_eq!(plan.dirs, {
            let mut d = vec![root.join("src"), outside.clone()];
            d.sort();
            d
        });
        assert_eq!(plan.ignored_dirs, vec!["missing".to_string()]);
        assert!(!plan.fell_back_to_cwd);
        assert!(!plan.filter.wants(&root.join("vendor/lib.py")));
        assert!(plan.filter.wants(&root.join("src/lib.py")));

        // Excluding the only watched directory falls back to the current one.
        let mut opts = options(&[], &["src"]);
        opts.reload_dirs = vec!["src".into()];
        let plan = WatchPlan::new(&opts, &root, &root);
        assert_eq!(plan.dirs, vec![root.clone()]);
        assert!(plan.fell_back_to_cwd);

        // An --app-dir outside the current directory is watched by default.
        let plan = WatchPlan::new(&options(&[], &[]), &root, &outside);
        assert_eq!(plan.dirs, vec![root.clone(), outside.clone()]);
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&outside);
    }
}
