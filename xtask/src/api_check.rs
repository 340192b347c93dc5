//! `cargo xtask api-check`: every asyncio entry of `docs/api-entries.txt` (a
//! copy of the low-level API index) has a row in `docs/API.md`, a findable
//! `#[doc(alias)]`, and every test a row names exists.
//!
//! Checks, each problem listed, exit 1 when any:
//! - every entry has a row in `docs/API.md` whose first column names its bare
//!   method name inside backticks (`call_soon()`, `await loop.sock_recv()`);
//! - every entry not marked `pending:` has its alias (`loop.call_soon`) in the
//!   built search index (`target/doc/search.index/`, `target/doc/search-index*.js`)
//!   or, failing that, in a `#[doc(alias = "...")]` of `src/` or `loop-*/src/`;
//! - every asyncio name of API.md (a dotted name inside the backticks of a
//!   row's first column: `loop.call_soon()`, `asyncio.Future`,
//!   `StreamReader.readline()`) is found by rustdoc's search: in the built
//!   search index or, failing that, in a `#[doc(alias)]` of the sources;
//! - every test named in the third column of any row (backticked names after a
//!   `[file.rs ...](../tests/file.rs)` link) is an `fn <name>` of that file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// One line of `docs/api-entries.txt`.
#[derive(Debug, PartialEq)]
pub struct Entry {
    /// The dotted asyncio name, as used by our doc aliases (`loop.call_soon`).
    pub alias: String,
    /// `Some("issue 6")` for entries that are not implemented yet.
    pub pending: Option<String>,
}

impl Entry {
    /// The bare method name: the part after the last dot (`call_soon`).
    pub fn bare(&self) -> &str {
        self.alias.rsplit('.').next().unwrap_or(&self.alias)
    }
}

/// Parses the entry list: one alias per line, optionally followed by
/// `pending: <why>`; blank lines and `#` comments are skipped.
pub fn parse_entries(text: &str) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.split_once(char::is_whitespace) {
            Some((name, rest)) => (name, rest.trim()),
            None => (line, ""),
        };
        let pending = if rest.is_empty() {
            None
        } else if let Some(why) = rest.strip_prefix("pending:") {
            Some(why.trim().to_string())
        } else {
            return Err(format!("line {}: unexpected `{rest}`", n + 1));
        };
        if !name.contains('.') {
            return Err(format!("line {}: `{name}` has no dotted prefix", n + 1));
        }
        out.push(Entry {
            alias: name.to_string(),
            pending,
        });
    }
    Ok(out)
}

/// One table row of `docs/API.md`.
#[derive(Debug, Default, PartialEq)]
pub struct Row {
    /// 1-based line number in API.md.
    pub line: usize,
    /// Identifiers inside the backtick spans of the first column.
    pub names: Vec<String>,
    /// The dotted asyncio names inside the backtick spans of the first
    /// column (`loop.call_soon`, `asyncio.Future`, `Process.communicate`).
    pub dotted: Vec<String>,
    /// `(tests/file.rs, fn name)` pairs from the third column.
    pub tests: Vec<(String, String)>,
    /// Every `tests/file.rs` linked from the third column.
    pub files: Vec<String>,
}

/// Parses every three-column table row of API.md (headers and separators skipped).
pub fn parse_rows(text: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('|') || line.starts_with("|---") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 3 || cells[0] == "asyncio" {
            continue;
        }
        let mut row = Row {
            line: n + 1,
            ..Row::default()
        };
        for span in backtick_spans(cells[0]) {
            row.names.extend(identifiers(span));
            row.dotted.extend(dotted_names(span));
        }
        parse_tests(cells[2], &mut row);
        rows.push(row);
    }
    rows
}

/// The contents of the `...` spans of `s`.
fn backtick_spans(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// The `[A-Za-z0-9_]+` words of `s`.
fn identifiers(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The dotted names of `s`: words of identifier characters and dots, every
/// segment a non-empty identifier, at least two segments
/// (`await loop.sock_recv()` gives `loop.sock_recv`; `...` gives nothing).
pub fn dotted_names(s: &str) -> Vec<String> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter(|w| {
            let segments: Vec<&str> = w.split('.').collect();
            segments.len() >= 2
                && segments
                    .iter()
                    .all(|seg| seg.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        })
        .map(str::to_string)
        .collect()
}

fn is_test_name(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Reads the third column: `[file.rs `a`](../tests/file.rs), `b`; [other.rs](../tests/other.rs)`.
/// Backticked names belong to the last linked file; plain parenthesised
/// remarks (`(every test: ...)`) are skipped.
fn parse_tests(cell: &str, row: &mut Row) {
    let mut file: Option<String> = None;
    let mut rest = cell;
    while let Some(c) = rest.chars().next() {
        match c {
            '[' => {
                let Some(close) = rest.find("](") else { break };
                let text = &rest[1..close];
                let after = &rest[close + 2..];
                let Some(end) = after.find(')') else { break };
                let url = &after[..end];
                let path = url.trim_start_matches("../");
                if path.starts_with("tests/") && path.ends_with(".rs") {
                    file = Some(path.to_string());
                    row.files.push(path.to_string());
                }
                for name in backtick_spans(text) {
                    if let (Some(f), true) = (&file, is_test_name(name)) {
                        row.tests.push((f.clone(), name.to_string()));
                    }
                }
                rest = &after[end + 1..];
            }
            '(' => {
                // Skip a parenthesised remark, nesting included.
                let mut depth = 0usize;
                let mut cut = rest.len();
                for (i, ch) in rest.char_indices() {
                    match ch {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                cut = i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &rest[cut..];
            }
            '`' => {
                let Some(end) = rest[1..].find('`') else {
                    break;
                };
                let name = &rest[1..1 + end];
                if let (Some(f), true) = (&file, is_test_name(name)) {
                    row.tests.push((f.clone(), name.to_string()));
                }
                rest = &rest[end + 2..];
            }
            _ => rest = &rest[c.len_utf8()..],
        }
    }
}

/// Whether `src` defines `fn name` (followed by `(` or `<`).
pub fn defines_fn(src: &str, name: &str) -> bool {
    let needle = format!("fn {name}");
    src.match_indices(&needle)
        .any(|(i, _)| matches!(src[i + needle.len()..].chars().next(), Some('(' | '<')))
}

/// Every `#[doc(alias = "...")]` string in `src`.
pub fn source_aliases(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in src.match_indices("doc(alias") {
        let tail = &src[i + "doc(alias".len()..];
        let tail = tail.trim_start();
        let Some(tail) = tail.strip_prefix('=') else {
            continue;
        };
        let tail = tail.trim_start();
        let Some(tail) = tail.strip_prefix('"') else {
            continue;
        };
        if let Some(end) = tail.find('"') {
            out.push(tail[..end].to_string());
        }
    }
    out
}

/// Whether the search index data holds `alias` as a whole string.
///
/// rustdoc 1.9x (`search.index/name/*.js`) stores each name behind its length,
/// written as optional high hex digits `A`..`O` (1..15) then a final digit
/// `` ` ``..`o` (0..15): `n` = 14, `` A` `` = 16, `Ai` = 25; older
/// `search-index.js` quotes aliases as JSON strings.
pub fn index_has(data: &str, alias: &str) -> bool {
    if data.contains(&format!("\"{alias}\"")) {
        return true;
    }
    let len = alias.len();
    let bytes = data.as_bytes();
    data.match_indices(alias).any(|(i, _)| {
        let Some(&low) = i.checked_sub(1).and_then(|j| bytes.get(j)) else {
            return false;
        };
        if !(b'`'..=b'o').contains(&low) {
            return false;
        }
        let low = usize::from(low - b'`');
        if low == len {
            return true;
        }
        match i.checked_sub(2).and_then(|j| bytes.get(j)) {
            Some(&high) if (b'A'..=b'O').contains(&high) => {
                usize::from(high - b'@') * 16 + low == len
            }
            _ => false,
        }
    })
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(read) = fs::read_dir(dir) else { return };
    for entry in read.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "js") {
            out.push(path);
        }
    }
}

/// All text of the built search index, or `None` when there is no `target/doc`.
fn search_index(root: &Path) -> Option<String> {
    let doc = root.join("target/doc");
    let mut files = Vec::new();
    rs_files(&doc.join("search.index"), &mut files);
    if let Ok(read) = fs::read_dir(&doc) {
        for e in read.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("search-index") && name.ends_with(".js") {
                files.push(e.path());
            }
        }
    }
    if files.is_empty() {
        return None;
    }
    let mut all = String::new();
    for f in files {
        all.push_str(&fs::read_to_string(f).unwrap_or_default());
        all.push('\n');
    }
    Some(all)
}

pub fn run(args: &[String]) -> ExitCode {
    if let Some(extra) = args.first() {
        return crate::usage_error(&format!("`api-check` takes no arguments (got `{extra}`)"));
    }
    let root = crate::workspace_root();
    let read = |rel: &str| {
        fs::read_to_string(root.join(rel)).map_err(|e| format!("api-check: cannot read {rel}: {e}"))
    };
    let (entries_txt, api_md) = match (read("docs/api-entries.txt"), read("docs/API.md")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let entries = match parse_entries(&entries_txt) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("api-check: docs/api-entries.txt: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows = parse_rows(&api_md);

    let mut sources = Vec::new();
    rs_files(&root.join("src"), &mut sources);
    if let Ok(read) = fs::read_dir(&root) {
        for e in read.flatten() {
            if e.file_name().to_string_lossy().starts_with("loop-") {
                rs_files(&e.path().join("src"), &mut sources);
            }
        }
    }
    let mut aliases = Vec::new();
    for f in sources
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "rs"))
    {
        aliases.extend(source_aliases(&fs::read_to_string(f).unwrap_or_default()));
    }
    let index = search_index(&root);
    if index.is_none() {
        println!("api-check: no target/doc search index (run `cargo doc`); checking sources only");
    }

    let mut problems = Vec::new();
    let (mut in_index, mut in_sources_only, mut pending) = (0, 0, 0);
    for entry in &entries {
        let bare = entry.bare();
        if !rows.iter().any(|r| r.names.iter().any(|n| n == bare)) {
            problems.push(format!(
                "{}: no row in docs/API.md names `{bare}` in its first column",
                entry.alias
            ));
        }
        if entry.pending.is_some() {
            pending += 1;
            continue;
        }
        if index.as_deref().is_some_and(|d| index_has(d, &entry.alias)) {
            in_index += 1;
        } else if aliases.contains(&entry.alias) {
            in_sources_only += 1;
        } else {
            problems.push(format!(
                "{}: alias neither in the search index nor in any #[doc(alias)]",
                entry.alias
            ));
        }
    }

    // Every asyncio name of API.md, findable by rustdoc's search.
    let mut names_checked = 0;
    for row in &rows {
        for name in &row.dotted {
            names_checked += 1;
            let found = match index.as_deref() {
                Some(d) => index_has(d, name),
                None => aliases.contains(name),
            };
            if !found {
                let place = if index.is_some() {
                    "the search index"
                } else {
                    "any #[doc(alias)]"
                };
                problems.push(format!(
                    "docs/API.md:{}: `{name}` is not in {place} \
                     (add #[doc(alias = \"{name}\")] to its item, and to a `pub use` of it \
                     from a private module: rustdoc drops the item's own alias there)",
                    row.line
                ));
            }
        }
    }

    let mut tests_checked = 0;
    for row in &rows {
        for file in &row.files {
            if !root.join(file).is_file() {
                problems.push(format!("docs/API.md:{}: {file} does not exist", row.line));
            }
        }
        for (file, name) in &row.tests {
            tests_checked += 1;
            let src = fs::read_to_string(root.join(file)).unwrap_or_default();
            if !defines_fn(&src, name) {
                problems.push(format!(
                    "docs/API.md:{}: no `fn {name}` in {file}",
                    row.line
                ));
            }
        }
    }

    for p in &problems {
        println!("api-check: {p}");
    }
    println!(
        "api-check: {} entries ({pending} pending; aliases: {in_index} in search index, \
         {in_sources_only} in sources only), {} rows, {names_checked} asyncio names of API.md \
         checked, {tests_checked} tests named, {} problems",
        entries.len(),
        rows.len(),
        problems.len()
    );
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_with_pending_and_comments() {
        let e = parse_entries("# c\n\nloop.call_soon\nloop.subprocess_exec  pending: issue 6\n")
            .unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].bare(), "call_soon");
        assert_eq!(e[0].pending, None);
        assert_eq!(e[1].pending.as_deref(), Some("issue 6"));
        assert!(parse_entries("call_soon\n").is_err());
        assert!(parse_entries("loop.x junk\n").is_err());
    }

    #[test]
    fn rows_give_names_and_tests_per_file() {
        let md = "| asyncio | Rust item | test |\n|---|---|---|\n\
            | `await loop.sock_recv()` / `sock_recv_into()` | `X::y` | \
            [sock.rs `connect_then_accept`](../tests/sock.rs), `recv_and_recv_into`; \
            [tcp.rs](../tests/tcp.rs) (every test: `kill` from another process) |\n\
            | subprocess | **not yet** (issue 6) | |\n";
        let rows = parse_rows(md);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 3);
        assert!(rows[0].names.iter().any(|n| n == "sock_recv"));
        assert!(rows[0].names.iter().any(|n| n == "sock_recv_into"));
        assert_eq!(
            rows[0].tests,
            vec![
                ("tests/sock.rs".into(), "connect_then_accept".into()),
                ("tests/sock.rs".into(), "recv_and_recv_into".into()),
            ]
        );
        assert_eq!(rows[0].files, vec!["tests/sock.rs", "tests/tcp.rs"]);
        assert!(rows[1].names.is_empty() && rows[1].tests.is_empty());
    }

    #[test]
    fn dotted_names_are_the_asyncio_names_of_a_span() {
        assert_eq!(
            dotted_names("await loop.sock_recv()"),
            vec!["loop.sock_recv"]
        );
        assert_eq!(
            dotted_names("Process.communicate(input)"),
            vec!["Process.communicate"]
        );
        assert_eq!(
            dotted_names("asyncio.subprocess.PIPE"),
            vec!["asyncio.subprocess.PIPE"]
        );
        assert!(dotted_names("RuntimeError: ... already waiting").is_empty());
        assert!(dotted_names("close()").is_empty());
        assert!(dotted_names("futures-io").is_empty());
        let rows = parse_rows("| `asyncio.Future` / `loop.time()` | x | |\n");
        assert_eq!(rows[0].dotted, vec!["asyncio.Future", "loop.time"]);
    }

    #[test]
    fn fn_and_alias_detection() {
        let src = "#[doc(alias = \"loop.call_soon\")]\nfn call_soon_x() {}\nfn generic<T>() {}";
        assert!(defines_fn(src, "call_soon_x"));
        assert!(defines_fn(src, "generic"));
        assert!(!defines_fn(src, "call_soon"));
        assert_eq!(source_aliases(src), vec!["loop.call_soon"]);
    }

    #[test]
    fn index_matches_whole_length_prefixed_names_only() {
        let data = "00nloop.call_soon00Ailoop.call_soon_threadsafe0iloop.time";
        assert!(index_has(data, "loop.call_soon"));
        assert!(index_has(data, "loop.call_soon_threadsafe"));
        assert!(index_has(data, "loop.time"));
        assert!(index_has("0A`loop.create_task000", "loop.create_task"));
        assert!(index_has(
            "0Bfxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            &"x".repeat(38)
        ));
        assert!(!index_has("Ailoop.call_soon_threadsafe", "loop.call_soon"));
        assert!(index_has("[\"loop.stop\"]", "loop.stop"));
    }
}
