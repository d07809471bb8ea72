//! Dependencies point one way: no two source files reach each other through
//! `crate::` paths, directly or around a longer circle. Each file is a node;
//! each `crate::a::b` path it names is an edge to the most specific file
//! that defines it. A cycle fails the test and names its files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a::b`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts.join("::")
}

/// Every `crate::x::y` path a file names, in `use` items (braces expanded
/// one level) and in code; test modules are left out, as they may reach
/// anywhere.
fn crate_paths(text: &str) -> Vec<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(after.len());
        let path = after[..end].trim_end_matches(':');
        if after[end..].starts_with('{') || path.is_empty() {
            let close = after.find('}').unwrap_or(after.len());
            for item in after[end.min(close)..close]
                .trim_start_matches('{')
                .split(',')
            {
                let item = item.trim().split(' ').next().unwrap_or("");
                let joined = if path.is_empty() {
                    item.to_string()
                } else {
                    format!("{path}::{item}")
                };
                paths.push(joined.trim_end_matches("::").to_string());
            }
        } else {
            paths.push(path.to_string());
        }
        rest = &after[end..];
    }
    paths
}

fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's strongly connected components.
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, node: &'g str) {
        s.index.insert(node, s.next);
        s.low.insert(node, s.next);
        s.next += 1;
        s.stack.push(node);
        s.on_stack.insert(node);
        for next in s.graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !s.index.contains_key(next) {
                visit(s, next);
                let low = s.low[next].min(s.low[node]);
                s.low.insert(node, low);
            } else if s.on_stack.contains(next) {
                let low = s.index[next].min(s.low[node]);
                s.low.insert(node, low);
            }
        }
        if s.low[node] == s.index[node] {
            let mut component = Vec::new();
            while let Some(top) = s.stack.pop() {
                s.on_stack.remove(top);
                component.push(top.to_string());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let edges = graph.entry(from.clone()).or_default();
        for path in crate_paths(&text) {
            // The most specific module file the path lives in.
            let mut parts: Vec<&str> = path.split("::").collect();
            while !parts.is_empty() && !modules.contains(&parts.join("::")) {
                parts.pop();
            }
            let to = parts.join("::");
            if !to.is_empty() && to != from {
                edges.insert(to);
            }
        }
    }
    graph
}

#[test]
fn no_two_modules_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    assert!(graph.len() > 20, "read {} modules", graph.len());
    let found = cycles(&graph);
    let described: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    graph[a]
                        .iter()
                        .filter(|b| c.contains(b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            format!("{} ({})", c.join(", "), edges.join("; "))
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles among crate modules:\n{}",
        described.join("\n")
    );
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
    .collect();
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
    assert_eq!(
        crate_paths(
            "use crate::proxy::{outbound::Spec, forward};\nlet x = crate::reply::ProxyError::X;"
        ),
        vec![
            "proxy::outbound::Spec",
            "proxy::forward",
            "reply::ProxyError::X"
        ]
    );
}

/// SECURITY #2 (DNS rebinding): a name is resolved once, by
/// `upstream::resolve`, whose checked address is what gets dialled. Any
/// other lookup in the code (a resolver call, or a dialler handed a name to
/// resolve itself) could answer differently from the one checked.
#[test]
fn names_are_resolved_in_one_place() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    const LOOKUPS: &[&str] = &[
        "lookup_host",
        "to_socket_addrs",
        "ToSocketAddrs",
        "ToInetSocketAddrs",
        "getaddrinfo(",
        "hickory",
        "trust_dns",
        "dns_lookup",
    ];
    let mut found = Vec::new();
    let mut resolver_lookups = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let code = match text.find("#[cfg(test)]\nmod tests") {
            Some(at) => &text[..at],
            None => &text,
        };
        let resolver = file.ends_with("upstream/resolve.rs");
        for (n, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for lookup in LOOKUPS {
                if !line.contains(lookup) {
                    continue;
                }
                if resolver {
                    resolver_lookups += 1;
                } else {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
            // Diallers take the checked `SocketAddr`, never a name.
            for dial in ["HttpPeer::new(", "TcpStream::connect("] {
                if let Some(at) = line.find(dial) {
                    let arg = &line[at + dial.len()..];
                    let arg = arg.split([',', ')']).next().unwrap_or_default();
                    let names_an_address = arg.ends_with("addr")
                        || arg.ends_with("target")
                        || arg.ends_with("local_addr()");
                    if !names_an_address && !resolver {
                        found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert_eq!(
        resolver_lookups, 1,
        "upstream/resolve.rs resolves in one call"
    );
    assert!(
        found.is_empty(),
        "names resolved or dialled outside upstream::resolve:\n{}",
        found.join("\n")
    );
}
