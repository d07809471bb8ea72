//! Which parts of `input` a revision's modules read. A decision is a
//! function of those parts and the revision's data, so two calls that agree
//! on every part get the same decision, and the second need not be
//! evaluated.
//!
//! The scan is deliberately conservative: any read it cannot name as a
//! fixed path (`input[x]`, `input` passed whole, `import input`) makes it
//! give up, and then every call is evaluated.

/// The fixed `input.a.b` paths the modules read, none a prefix of another,
/// or `None` when some read of `input` is not a fixed path.
pub fn input_paths(modules: &[(String, String)]) -> Option<Vec<Vec<String>>> {
    let mut paths = Vec::new();
    for (_, text) in modules {
        scan(text, &mut paths)?;
    }
    paths.sort();
    paths.dedup();
    // A path read whole covers every path under it.
    let mut minimal: Vec<Vec<String>> = Vec::new();
    for path in paths {
        if !minimal.iter().any(|kept| path.starts_with(kept)) {
            minimal.push(path);
        }
    }
    Some(minimal)
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Reads one module, skipping strings and comments, and adds the path of
/// every `input` reference; `None` on a reference that is not a fixed path.
fn scan(text: &str, paths: &mut Vec<Vec<String>>) -> Option<()> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut previous_word: &str = "";
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                previous_word = "";
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
                i += 1;
                previous_word = "";
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                let word = &text[start..i];
                // `x.input` is a field named input, not the document.
                let is_field = start > 0 && bytes[start - 1] == b'.';
                if word == "input" && !is_field {
                    let (path, end) = chain(text, i)?;
                    i = end;
                    if path.is_empty() {
                        // `with input as {...}` replaces input; every other
                        // bare use reads all of it.
                        if previous_word != "with" {
                            return None;
                        }
                    } else {
                        paths.push(path);
                    }
                }
                previous_word = word;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                i += 1;
                previous_word = "";
            }
        }
    }
    Some(())
}

/// The `.field` and `["field"]` steps after `input`, and where they end;
/// `None` when a step is computed.
fn chain(text: &str, mut i: usize) -> Option<(Vec<String>, usize)> {
    let bytes = text.as_bytes();
    let mut path = Vec::new();
    loop {
        match bytes.get(i) {
            Some(b'.') if bytes.get(i + 1).copied().is_some_and(is_ident_start) => {
                let start = i + 1;
                i = start;
                while i < bytes.len() && is_ident(bytes[i]) {
                    i += 1;
                }
                path.push(text[start..i].to_string());
            }
            Some(b'[') => {
                let rest = &text[i + 1..];
                let literal = rest.strip_prefix('"')?;
                let close = literal.find('"')?;
                let field = &literal[..close];
                if field.contains('\\') || !literal[close + 1..].starts_with(']') {
                    return None;
                }
                path.push(field.to_string());
                i += 1 + 1 + close + 1 + 1;
            }
            _ => return Some((path, i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Option<Vec<String>> {
        input_paths(&[("m.rego".into(), text.into())])
            .map(|ps| ps.into_iter().map(|p| p.join(".")).collect())
    }

    #[test]
    fn fixed_reads_are_named_and_covered_by_their_prefix() {
        let found = paths(
            r#"package p
# input[x] in a comment is not a read
allow if input.data.classification == "public"
allow if input.destination.entity.cloud_act
allow if input.destination["entity"].name == "input[x]"
allow if { some n in input.data.pii; n > 0 }
note := `input[raw]`
x := my_input.a
y := z.input[k]
"#,
        );
        assert_eq!(
            found.unwrap(),
            [
                "data.classification",
                "data.pii",
                "destination.entity.cloud_act",
                "destination.entity.name"
            ]
        );
        assert_eq!(
            paths("package p\nd := input.data\nc := input.data.classification\n").unwrap(),
            ["data"]
        );
    }

    #[test]
    fn computed_or_whole_reads_give_up() {
        for text in [
            "package p\nv := input[k]\n",
            "package p\nv := input.data[k]\n",
            "package p\nv := input.data[0]\n",
            "package p\nv := object.get(input, \"data\", {})\n",
            "package p\nv := walk(input)\n",
            "package p\nimport input\n",
            "package p\nv := json.marshal(input)\n",
            "package p\nv := input[\"a\\\"b\"]\n",
        ] {
            assert_eq!(paths(text), None, "{text}");
        }
    }

    #[test]
    fn replacing_input_with_with_is_not_a_read() {
        let found =
            paths("package p\nt if { x with input as {\"a\": 1} }\nu := input.request.model\n");
        assert_eq!(found.unwrap(), ["request.model"]);
    }

    #[test]
    fn the_default_policies_read_fixed_paths() {
        let files = crate::policy::load::PolicyFiles::embedded();
        let found = input_paths(&files.modules).expect("default policies are cacheable");
        let joined: Vec<String> = found.iter().map(|p| p.join(".")).collect();
        assert!(
            joined.contains(&"data.classification".to_string()),
            "{joined:?}"
        );
        assert!(
            !joined.iter().any(|p| p.starts_with("request.headers")),
            "{joined:?}"
        );
    }
}
