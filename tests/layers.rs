//! The crate's shape, checked over its source (`ARCHITECTURE.md`, "Layers"): modules point
//! one way, files do not form import circles, and a file or function stays small enough to
//! read in one sitting.
//!
//! It reads every file of `src/` as text, as a reader would: every `use` of `crate::`,
//! `super::` or `self::`, and every inline `crate::…` or `super::…` path (test-only code
//! included; comments and strings skipped) is an arrow from the file to the file that
//! defines the module it names. A failure names the file, the line and both modules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The floors, bottom to top: a module may name only modules on its own floor or below.
const FLOORS: &[&[&str]] = &[
    &[
        "model", "archive", "clock", "time", "systemd", "logging", "machine",
    ],
    &["settings"],
    &["store"],
    &["galaxies"],
    &["persistence"],
    &["app"],
    &["http"],
    &["serve"],
    &["check", "cli"],
    // The crate's root and the tests' window inside it sit above everything.
    &["", "testing"],
];

/// A non-test file longer than this wants to become a folder.
const MAX_FILE_LINES: usize = 700;
/// A function longer than this wants to become several.
const MAX_FN_LINES: usize = 100;
/// A file's header may keep it longer, saying why on a line that starts with this.
const LENGTH_EXEMPTION: &str = "//! Length:";

#[test]
fn modules_name_only_their_own_floor_or_below() {
    let crate_ = Crate::read(&src_dir());
    let mut failures = String::new();
    for arrow in &crate_.arrows {
        let (from, to) = (crate_.top(&arrow.from), crate_.top(&arrow.to));
        if floor(from) < floor(to) {
            let _ = writeln!(
                failures,
                "{}:{}: module `{}` names `{}`, a higher floor",
                crate_.path(&arrow.from),
                arrow.line,
                display(&arrow.from),
                display(&arrow.to),
            );
        }
    }
    assert!(failures.is_empty(), "arrows pointing up:\n{failures}");
}

#[test]
fn files_form_no_import_circle() {
    let crate_ = Crate::read(&src_dir());
    let mut failures = String::new();
    for (files, circle) in crate_.circles() {
        let names: Vec<String> = files.iter().map(display).collect();
        let _ = writeln!(
            failures,
            "a circle of {} files ({}); one way round:",
            files.len(),
            names.join(", ")
        );
        for arrow in circle {
            let _ = writeln!(
                failures,
                "  {}:{}: `{}` names `{}`",
                crate_.path(&arrow.from),
                arrow.line,
                display(&arrow.from),
                display(&arrow.to),
            );
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

#[test]
fn files_and_functions_fit_one_sitting() {
    let crate_ = Crate::read(&src_dir());
    let mut failures = String::new();
    for file in crate_.files.values() {
        if file.is_test_file() || file.exempt_from_length {
            continue;
        }
        if file.non_test_lines > MAX_FILE_LINES {
            let _ = writeln!(
                failures,
                "{}: {} lines outside tests (at most {MAX_FILE_LINES}, or a `{LENGTH_EXEMPTION}` line saying why)",
                file.path.display(),
                file.non_test_lines
            );
        }
        for function in &file.long_functions {
            let _ = writeln!(
                failures,
                "{}:{}: fn `{}` is {} lines (at most {MAX_FN_LINES})",
                file.path.display(),
                function.line,
                function.name,
                function.lines
            );
        }
    }
    assert!(
        failures.is_empty(),
        "too long to read in one sitting:\n{failures}"
    );
}

/// The check itself: an arrow up and a circle are found in a crate made for the purpose.
#[test]
fn the_check_finds_an_arrow_up_and_a_circle() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("lib.rs", "mod model;\nmod app;\n");
    write("app.rs", "pub struct Up;\n");
    write(
        "model/mod.rs",
        "//! A doc naming crate::app::Nothing is no arrow.\nmod a;\nmod b;\n\
         fn f() -> &'static str { \"crate::app::Nor\" }\n\
         fn g() { let _ = crate::app::Up::new(); }\n\
         #[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
    );
    write("model/a.rs", "use super::b::Thing;\nlet c = 'x';\n");
    write("model/b.rs", "pub(crate) use super::{a::Other, self};\n");
    let crate_ = Crate::read(dir.path());
    let up: Vec<_> = crate_
        .arrows
        .iter()
        .filter(|a| floor(crate_.top(&a.from)) < floor(crate_.top(&a.to)))
        .map(|a| (display(&a.from), a.line, display(&a.to)))
        .collect();
    assert_eq!(up, vec![("model".to_string(), 5, "app".to_string())]);
    let circles = crate_.circles();
    assert_eq!(circles.len(), 1, "one circle: model::a and model::b");
    let mut files: Vec<_> = circles[0].1.iter().map(|a| display(&a.from)).collect();
    files.sort();
    assert_eq!(files, ["model::a", "model::b"]);
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn floor(top: &str) -> usize {
    FLOORS
        .iter()
        .position(|floor| floor.contains(&top))
        .unwrap_or_else(|| panic!("module `{top}` is on no floor: add it to FLOORS"))
}

/// A module's path inside the crate, `[]` for the root.
type ModPath = Vec<String>;

fn display(module: &ModPath) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

#[derive(Clone, Debug)]
struct Arrow {
    from: ModPath,
    line: usize,
    to: ModPath,
}

struct File {
    path: PathBuf,
    non_test_lines: usize,
    exempt_from_length: bool,
    long_functions: Vec<LongFunction>,
}

impl File {
    fn is_test_file(&self) -> bool {
        self.path.file_stem().is_some_and(|s| s == "tests")
    }
}

struct LongFunction {
    name: String,
    line: usize,
    lines: usize,
}

struct Crate {
    /// Every file-backed module, by its path.
    files: BTreeMap<ModPath, File>,
    arrows: Vec<Arrow>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut paths = Vec::new();
        collect_rs(src, &mut paths);
        let mut files = BTreeMap::new();
        let mut tokens_by_module = Vec::new();
        for path in paths {
            let relative = path.strip_prefix(src).expect("under src");
            let Some(module) = module_of(relative) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            let tokens = tokenize(&text);
            let balance = tokens.iter().fold(0i64, |n, (_, t)| match t {
                Token::Punct("{") => n + 1,
                Token::Punct("}") => n - 1,
                _ => n,
            });
            assert_eq!(
                balance,
                0,
                "{}: braces do not balance as read",
                path.display()
            );
            let scan = scan_lengths(&tokens, &text);
            files.insert(
                module.clone(),
                File {
                    path: PathBuf::from("src").join(relative),
                    non_test_lines: scan.non_test_lines,
                    exempt_from_length: text
                        .lines()
                        .take_while(|l| l.starts_with("//!") || l.is_empty())
                        .any(|l| l.starts_with(LENGTH_EXEMPTION)),
                    long_functions: scan.long_functions,
                },
            );
            tokens_by_module.push((module, tokens));
        }
        let modules: BTreeSet<ModPath> = files.keys().cloned().collect();
        let mut arrows = Vec::new();
        for (module, tokens) in &tokens_by_module {
            for (line, path, scope) in referenced_paths(tokens) {
                let mut within = module.clone();
                within.extend(scope);
                if let Some(to) = resolve(&modules, &within, &path) {
                    if &to != module {
                        arrows.push(Arrow {
                            from: module.clone(),
                            line,
                            to,
                        });
                    }
                }
            }
        }
        Crate { files, arrows }
    }

    fn path(&self, module: &ModPath) -> String {
        self.files[module].path.display().to_string()
    }

    /// The top-level module a file belongs to, `""` for the root.
    fn top<'a>(&self, module: &'a ModPath) -> &'a str {
        module.first().map(String::as_str).unwrap_or("")
    }

    /// Every import circle among files: the files in it, and the arrows of one way round.
    fn circles(&self) -> Vec<(Vec<ModPath>, Vec<Arrow>)> {
        let mut next: BTreeMap<&ModPath, Vec<&Arrow>> = BTreeMap::new();
        for arrow in &self.arrows {
            next.entry(&arrow.from).or_default().push(arrow);
        }
        let components = strongly_connected(self.files.keys().collect(), &next);
        components
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|component| {
                let cycle = one_cycle(&component, &next);
                (component.into_iter().cloned().collect(), cycle)
            })
            .collect()
    }
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("a readable directory")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` are `a::b`; `lib.rs` is the root; `main.rs` is another crate.
fn module_of(relative: &Path) -> Option<ModPath> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    match last.as_str() {
        "main.rs" if parts.is_empty() => None,
        "lib.rs" if parts.is_empty() => Some(parts),
        "mod.rs" => Some(parts),
        file => {
            parts.push(file.trim_end_matches(".rs").to_string());
            Some(parts)
        }
    }
}

/// The file-backed module a path names: the longest prefix of it that is a module.
fn resolve(modules: &BTreeSet<ModPath>, within: &ModPath, path: &[String]) -> Option<ModPath> {
    let mut segments = path.iter().peekable();
    let mut at: ModPath = match path.first()?.as_str() {
        "crate" => {
            segments.next();
            Vec::new()
        }
        "super" | "self" => {
            let mut at = within.clone();
            while let Some(s) = segments.peek() {
                match s.as_str() {
                    "super" => {
                        at.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                segments.next();
            }
            at
        }
        _ => return None,
    };
    for segment in segments {
        let mut deeper = at.clone();
        deeper.push(segment.clone());
        if !modules.contains(&deeper) {
            break;
        }
        at = deeper;
    }
    // An inline module inside a file belongs to that file.
    while !modules.contains(&at) {
        at.pop()?;
    }
    Some(at)
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Punct(&'static str),
}

/// Tokens with their lines: identifiers and the punctuation paths need; comments, strings
/// and characters are dropped.
fn tokenize(text: &str) -> Vec<(usize, Token)> {
    let bytes = text.as_bytes();
    let (mut i, mut line, mut tokens) = (0, 1, Vec::new());
    let skip_to = |from: usize, until: &[u8], line: &mut usize| -> usize {
        let mut j = from;
        while j < bytes.len() && !bytes[j..].starts_with(until) {
            if bytes[j] == b'\n' {
                *line += 1;
            }
            j += 1;
        }
        (j + until.len()).min(bytes.len())
    };
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => i = skip_to(i, b"\n", &mut line) - 1,
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_to(i + 2, b"*/", &mut line),
            b'"' => {
                let mut j = i + 1;
                while j < bytes.len() && bytes[j] != b'"' {
                    if bytes[j] == b'\\' {
                        j += 1;
                    }
                    if bytes.get(j) == Some(&b'\n') {
                        line += 1;
                    }
                    j += 1;
                }
                i = j + 1;
            }
            b'r' if matches!(bytes.get(i + 1), Some(b'#') | Some(b'"'))
                && (i == 0 || !is_ident(bytes[i - 1])) =>
            {
                let hashes = bytes[i + 1..].iter().take_while(|&&b| b == b'#').count();
                if bytes.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                i = skip_to(i + 2 + hashes, &close, &mut line);
            }
            b'\'' => {
                // A character literal, or a lifetime (which has no closing quote).
                if bytes.get(i + 1) == Some(&b'\\') {
                    i = skip_to(i + 3, b"'", &mut line);
                } else if let Some(len) = text[i + 1..].chars().next().map(char::len_utf8) {
                    i += if bytes.get(i + 1 + len) == Some(&b'\'') {
                        len + 2
                    } else {
                        1
                    };
                } else {
                    i += 1;
                }
            }
            c if is_ident(c) && !c.is_ascii_digit() => {
                let start = i;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                tokens.push((line, Token::Ident(text[start..i].to_string())));
            }
            b':' if bytes.get(i + 1) == Some(&b':') => {
                tokens.push((line, Token::Punct("::")));
                i += 2;
            }
            _ => {
                let punct = match c {
                    b'{' => Some("{"),
                    b'}' => Some("}"),
                    b',' => Some(","),
                    b';' => Some(";"),
                    b'#' => Some("#"),
                    b'[' => Some("["),
                    b'(' => Some("("),
                    b')' => Some(")"),
                    b'!' => Some("!"),
                    _ => None,
                };
                if let Some(p) = punct {
                    tokens.push((line, Token::Punct(p)));
                }
                i += 1;
            }
        }
    }
    tokens
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn ident(tokens: &[(usize, Token)], i: usize) -> Option<&str> {
    match tokens.get(i) {
        Some((_, Token::Ident(s))) => Some(s),
        _ => None,
    }
}

fn punct(tokens: &[(usize, Token)], i: usize, p: &str) -> bool {
    matches!(tokens.get(i), Some((_, Token::Punct(q))) if *q == p)
}

/// Every path a file names that can point into the crate, with its line and the inline
/// modules it sits in (a `super::` inside `mod tests { … }` is the file itself).
fn referenced_paths(tokens: &[(usize, Token)]) -> Vec<(usize, Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    // Inline modules open around here: (name, brace depth inside it).
    let mut scope: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        let names: Vec<String> = scope.iter().map(|(n, _)| n.clone()).collect();
        match &tokens[i].1 {
            Token::Punct("{") => depth += 1,
            Token::Punct("}") => {
                if scope.last().is_some_and(|(_, d)| *d == depth) {
                    scope.pop();
                }
                depth = depth
                    .checked_sub(1)
                    .unwrap_or_else(|| panic!("unbalanced at line {}", tokens[i].0));
            }
            Token::Ident(k) if k == "mod" && punct(tokens, i + 2, "{") => {
                if let Some(name) = ident(tokens, i + 1) {
                    scope.push((name.to_string(), depth + 1));
                }
            }
            Token::Ident(k) if k == "use" && !punct(tokens, i + 1, "!") => {
                let line = tokens[i].0;
                let mut paths = Vec::new();
                let end = use_tree(tokens, i + 1, Vec::new(), &mut paths);
                out.extend(paths.into_iter().map(|p| (line, p, names.clone())));
                i = end;
                continue;
            }
            Token::Ident(k)
                if (k == "crate" || k == "super")
                    && punct(tokens, i + 1, "::")
                    && !(i > 0 && punct(tokens, i - 1, "::")) =>
            {
                let line = tokens[i].0;
                let mut path = vec![k.clone()];
                let mut j = i + 1;
                while punct(tokens, j, "::") {
                    match ident(tokens, j + 1) {
                        Some(s) => path.push(s.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                out.push((line, path, names.clone()));
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Reads one use tree from `i` onwards, pushing each full path; returns where it ended.
fn use_tree(
    tokens: &[(usize, Token)],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match &tokens.get(i).map(|t| &t.1) {
            Some(Token::Ident(s)) if s == "as" => {
                i += 2;
            }
            Some(Token::Ident(s)) => {
                prefix.push(s.clone());
                i += 1;
                if punct(tokens, i, "::") {
                    i += 1;
                    continue;
                }
            }
            // `::name`: an external crate's path, which never resolves into this one.
            Some(Token::Punct("::")) => {
                prefix.push("::".to_string());
                i += 1;
                continue;
            }
            Some(Token::Punct("{")) => {
                i += 1;
                while !punct(tokens, i, "}") && i < tokens.len() {
                    i = use_tree(tokens, i, prefix.clone(), out);
                    if punct(tokens, i, ",") {
                        i += 1;
                    }
                }
                return i + 1;
            }
            _ => {}
        }
        if !prefix.is_empty() {
            if prefix.last().is_some_and(|s| s == "self") {
                prefix.pop();
            }
            out.push(prefix.clone());
        }
        // Past the rest of this item of the tree (an `as` rename, a `*`).
        while i < tokens.len()
            && !matches!(
                tokens[i].1,
                Token::Punct(",") | Token::Punct("}") | Token::Punct(";")
            )
        {
            i += 1;
        }
        if punct(tokens, i, ";") {
            i += 1;
        }
        return i;
    }
}

struct Lengths {
    non_test_lines: usize,
    long_functions: Vec<LongFunction>,
}

/// The lines outside `#[cfg(test)]` items, and the functions over the limit outside them.
fn scan_lengths(tokens: &[(usize, Token)], text: &str) -> Lengths {
    let total = text.lines().count();
    let mut test_lines = 0;
    let mut long_functions = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if is_cfg_test(tokens, i) {
            // The attribute's item: up to its closing brace or semicolon.
            let start = tokens[i].0;
            let end = item_end(tokens, i + 6);
            test_lines += tokens[end.min(tokens.len() - 1)].0 + 1 - start;
            i = end + 1;
            continue;
        }
        if ident(tokens, i) == Some("fn") {
            if let Some(name) = ident(tokens, i + 1) {
                let end = item_end(tokens, i);
                if punct(tokens, end, "}") {
                    let lines = tokens[end].0 + 1 - tokens[i].0;
                    if lines > MAX_FN_LINES {
                        long_functions.push(LongFunction {
                            name: name.to_string(),
                            line: tokens[i].0,
                            lines,
                        });
                    }
                }
                // Nested functions are counted with their parent only.
                i = end + 1;
                continue;
            }
        }
        i += 1;
    }
    Lengths {
        non_test_lines: total.saturating_sub(test_lines),
        long_functions,
    }
}

/// `# [ cfg ( test ) ]`
fn is_cfg_test(tokens: &[(usize, Token)], i: usize) -> bool {
    punct(tokens, i, "#")
        && punct(tokens, i + 1, "[")
        && ident(tokens, i + 2) == Some("cfg")
        && punct(tokens, i + 3, "(")
        && ident(tokens, i + 4) == Some("test")
        && punct(tokens, i + 5, ")")
}

/// The index of the `}` closing the first body after `i`, or of a `;` met before any.
fn item_end(tokens: &[(usize, Token)], mut i: usize) -> usize {
    while i < tokens.len() {
        match tokens[i].1 {
            Token::Punct(";") => return i,
            Token::Punct("{") => {
                let mut depth = 0;
                while i < tokens.len() {
                    match tokens[i].1 {
                        Token::Punct("{") => depth += 1,
                        Token::Punct("}") => {
                            depth -= 1;
                            if depth == 0 {
                                return i;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                return tokens.len() - 1;
            }
            _ => i += 1,
        }
    }
    tokens.len().saturating_sub(1)
}

/// Tarjan's strongly connected components over the file graph.
fn strongly_connected<'a>(
    nodes: Vec<&'a ModPath>,
    next: &BTreeMap<&'a ModPath, Vec<&'a Arrow>>,
) -> Vec<Vec<&'a ModPath>> {
    struct State<'a> {
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on_stack: BTreeSet<&'a ModPath>,
        out: Vec<Vec<&'a ModPath>>,
    }
    fn visit<'a>(v: &'a ModPath, next: &BTreeMap<&'a ModPath, Vec<&'a Arrow>>, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for arrow in next.get(v).into_iter().flatten() {
            let w = &arrow.to;
            if !s.index.contains_key(w) {
                visit(w, next, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(component);
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !state.index.contains_key(v) {
            visit(v, next, &mut state);
        }
    }
    state.out
}

/// One cycle through a component, found by a breadth-first walk back to its first file.
fn one_cycle(component: &[&ModPath], next: &BTreeMap<&ModPath, Vec<&Arrow>>) -> Vec<Arrow> {
    let inside: BTreeSet<&ModPath> = component.iter().copied().collect();
    let start = component[0];
    let mut came_by: BTreeMap<&ModPath, &Arrow> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for arrow in next.get(v).into_iter().flatten() {
            if !inside.contains(&arrow.to) {
                continue;
            }
            if &arrow.to == start {
                let mut cycle = vec![(*arrow).clone()];
                let mut at = v;
                while at != start {
                    let back = came_by[at];
                    cycle.push(back.clone());
                    at = &back.from;
                }
                cycle.reverse();
                return cycle;
            }
            if !came_by.contains_key(&arrow.to) && &arrow.to != start {
                came_by.insert(&arrow.to, arrow);
                queue.push_back(&arrow.to);
            }
        }
    }
    Vec::new()
}
