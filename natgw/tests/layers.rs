//! natgw's modules depend on each other in one direction only (docs/architecture.md):
//!
//! ```text
//! cli ──► daemon ──► services ──► (natgw-proto)
//!  │        │  └───► nat_table ──► datapath ──► config
//!  └──► clients ──► services
//! ```
//!
//! This reads every source file, collects the `crate::<layer>` paths each top-level
//! module's code names outside its tests (comments aside), and fails on an edge the layering does not allow,
//! and on any cycle. Tests (`#[cfg(test)]` modules and `tests.rs` files) may reach
//! anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// What each layer may name; a layer not listed here may name nothing else.
const ALLOWED: &[(&str, &[&str])] = &[
    (
        "cli",
        &[
            "clients",
            "daemon",
            "services",
            "nat_table",
            "datapath",
            "config",
        ],
    ),
    ("daemon", &["services", "nat_table", "datapath", "config"]),
    ("clients", &["services"]),
    ("services", &[]),
    ("nat_table", &["datapath", "config"]),
    ("datapath", &["config"]),
    ("config", &[]),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("reading natgw/src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of `source` without its `#[cfg(test)]` items (each runs from the
/// attribute to the end of the braces that follow it).
fn without_tests(source: &str) -> String {
    let mut out = String::new();
    let mut rest = source;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        // The item ends at its closing brace, or at `;` for `mod tests;`.
        let open = after.find('{');
        let semi = after.find(';');
        let end = match (open, semi) {
            (Some(o), Some(s)) if s < o => s + 1,
            (Some(o), _) => {
                let mut depth = 0usize;
                let mut end = after.len();
                for (i, c) in after[o..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = o + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (None, Some(s)) => s + 1,
            (None, None) => after.len(),
        };
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Top-level layer → the layers it names.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let layer = rel
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if matches!(layer.as_str(), "lib" | "main") || rel.ends_with("tests.rs") {
            continue;
        }
        let text = without_tests(&fs::read_to_string(&file).expect("reading a source"));
        let named = edges.entry(layer.clone()).or_default();
        // Code only: a doc link to a lower layer's item is not a dependency.
        let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
        for line in code {
            for (at, _) in line.match_indices("crate::") {
                let tail = &line[at + "crate::".len()..];
                let name: String = tail
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != layer {
                    named.insert(name);
                }
            }
        }
    }
    edges
}

#[test]
fn layers_depend_one_way() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (layer, named) in edges() {
        let Some(may) = allowed.get(layer.as_str()) else {
            wrong.push(format!("{layer} is not a known layer: add it to ALLOWED"));
            continue;
        };
        for n in named {
            if !may.contains(&n.as_str()) {
                wrong.push(format!("{layer} names crate::{n}"));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_allowed_edges_have_no_cycle() {
    // Depth-first search over ALLOWED: the rule itself must be a DAG.
    fn visit<'a>(
        node: &'a str,
        graph: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        assert!(!path.contains(&node), "cycle: {path:?} -> {node}");
        if done.contains(node) {
            return;
        }
        path.push(node);
        for next in graph.get(node).copied().unwrap_or_default() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node);
    }
    let graph: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn test_items_are_cut_out() {
    let source = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n    fn f() { {} }\n}\nuse crate::c;\n#[cfg(test)]\nmod more;\n";
    let kept = without_tests(source);
    assert!(kept.contains("crate::a") && kept.contains("crate::c"));
    assert!(!kept.contains("crate::b") && !kept.contains("mod more"));
}
