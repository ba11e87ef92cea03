//! The top-level modules of each crate's `src/` ("rooms": a file
//! `src/NAME.rs` or a folder `src/NAME/`) import each other in layers, with
//! no circle: a room names (`crate::other`) only rooms below it. A circle
//! is what made a change in one foundation ripple through everything above
//! it. The crates: the daemon (`src/`) and each under `crates/` (between
//! crates, cargo itself refuses a circle).
//!
//! `cargo test --test integration modules_import_in_layers -- --nocapture`
//! prints every room's layer and the arrows between them. Test code
//! (`#[cfg(test)]` and what follows it, `tests.rs`, `*_tests.rs`) is left
//! out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Arrows = BTreeMap<String, BTreeMap<String, usize>>;

#[test]
fn modules_import_in_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (rooms, count) = check_crate(&root.join("src"));
    assert!(rooms > 10 && count > 50, "the daemon's source was not read: {rooms} rooms");
    let mut members = 0;
    for entry in std::fs::read_dir(root.join("crates")).expect("crates/ is readable") {
        let src = entry.expect("a directory entry").path().join("src");
        if src.is_dir() {
            check_crate(&src);
            members += 1;
        }
    }
    assert!(members >= 3, "the workspace's crates were not read: {members}");
}

/// Prints the rooms of the crate whose source is `src`, their arrows and
/// layers, and panics on a circle; returns how many rooms and arrows.
fn check_crate(src: &Path) -> (usize, usize) {
    let (rooms, arrows) = graph(src);
    let count: usize = arrows.values().map(BTreeMap::len).sum();
    println!("{}: rooms: {}, arrows: {count}", src.display(), rooms.len());
    for (from, targets) in &arrows {
        for (to, n) in targets {
            println!("  {from} -> {to} ({n})");
        }
    }
    match layers(&rooms, &arrows) {
        Ok(layers) => {
            for (depth, names) in layers {
                println!("layer {depth}: {}", names.into_iter().collect::<Vec<_>>().join(" "));
            }
        }
        Err(circle) => panic!(
            "modules of {} import each other in a circle: {}",
            src.display(),
            circle.join(" -> ")
        ),
    }
    (rooms.len(), count)
}

#[test]
fn a_circle_is_found() {
    let rooms: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    let mut arrows = Arrows::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a")] {
        arrows.entry(from.into()).or_default().insert(to.into(), 1);
    }
    let circle = layers(&rooms, &arrows).unwrap_err();
    assert_eq!(circle.first(), circle.last());
    assert_eq!(circle.len(), 4, "{circle:?}");
    arrows.get_mut("c").unwrap().clear();
    let layers = layers(&rooms, &arrows).unwrap();
    assert_eq!(layers[&0], ["c".to_owned()].into());
    assert_eq!(layers[&2], ["a".to_owned()].into());
}

#[test]
fn grouped_imports_name_each_room() {
    let text = "use crate::{a::X, b::{Y, Z}, c};\nfn f() { crate::d::g(); }";
    assert_eq!(named_rooms(text), ["a", "b", "c", "d"]);
}

fn graph(src: &Path) -> (BTreeSet<String>, Arrows) {
    let mut rooms = BTreeSet::new();
    let mut arrows = Arrows::new();
    for path in rust_files(src) {
        let Some(room) = room_of(src, &path) else { continue };
        rooms.insert(room.clone());
        let text = strip_comments(&production_text(&path));
        for target in named_rooms(&text) {
            if target != room && target != "self" && target != "super" {
                *arrows.entry(room.clone()).or_default().entry(target).or_default() += 1;
            }
        }
    }
    for targets in arrows.values_mut() {
        targets.retain(|to, _| rooms.contains(to));
    }
    (rooms, arrows)
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The room of a file; `None` for the crate root and the binaries.
fn room_of(src: &Path, path: &Path) -> Option<String> {
    let first = path.strip_prefix(src).ok()?.components().next()?;
    let first = first.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        _ => Some(first.trim_end_matches(".rs").to_owned()),
    }
}

fn production_text(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name == "tests.rs" || name.ends_with("_tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).expect("a source file is readable");
    match test_block_start(&text) {
        Some(marker) => text[..marker].to_owned(),
        None => text,
    }
}

/// Where the file's inline test module starts: a `#[cfg(test)]` whose item
/// opens a block (`mod tests {`). A `#[cfg(test)] mod x;` line only
/// declares a test file, which `production_text` leaves out on its own.
fn test_block_start(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]") {
        let marker = from + at;
        let after = &text[marker + "#[cfg(test)]".len()..];
        let item = after.trim_start().lines().next().unwrap_or_default();
        if item.trim_end().ends_with('{') {
            return Some(marker);
        }
        from = marker + 1;
    }
    None
}

/// The text without `//` and `/* */` comments (doc comments name modules
/// in links, which are not imports).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |end| &after[end..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else {
            let ch = rest.chars().next().expect("not empty");
            out.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
    }
    out
}

/// The rooms `text` names: `crate::NAME` and each head of `crate::{…}`.
fn named_rooms(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_word =
            rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_word {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = closing_brace(group);
            names.extend(group_heads(&group[..end]));
            rest = &group[end..];
        } else {
            let name: String =
                rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            names.push(name);
        }
    }
    names
}

/// The index of the brace that closes a group opened just before `text`.
fn closing_brace(text: &str) -> usize {
    let mut depth = 1;
    for (i, ch) in text.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// The first path segment of each item of `a, b::c, d::{e, f}`.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for ch in group.chars().chain([',']) {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                let head = current.trim().split("::").next().unwrap_or_default().trim();
                if !head.is_empty() {
                    heads.push(head.to_owned());
                }
                current.clear();
                continue;
            }
            _ => {}
        }
        if depth == 0 {
            current.push(ch);
        }
    }
    heads
}

/// Rooms by layer (0 imports no room; each room sits one above the highest
/// room it imports), or a circle as `a -> b -> … -> a`.
fn layers(
    rooms: &BTreeSet<String>,
    arrows: &Arrows,
) -> Result<BTreeMap<usize, BTreeSet<String>>, Vec<String>> {
    let mut depth = BTreeMap::new();
    for room in rooms {
        layer_of(room, arrows, &mut depth, &mut Vec::new())?;
    }
    let mut layers: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (room, d) in depth {
        layers.entry(d).or_default().insert(room);
    }
    Ok(layers)
}

fn layer_of(
    room: &str,
    arrows: &Arrows,
    depth: &mut BTreeMap<String, usize>,
    path: &mut Vec<String>,
) -> Result<usize, Vec<String>> {
    if let Some(d) = depth.get(room) {
        return Ok(*d);
    }
    if let Some(start) = path.iter().position(|r| r == room) {
        let mut circle = path[start..].to_vec();
        circle.push(room.to_owned());
        return Err(circle);
    }
    path.push(room.to_owned());
    let mut d = 0;
    for target in arrows.get(room).into_iter().flat_map(BTreeMap::keys) {
        d = d.max(layer_of(target, arrows, depth, path)? + 1);
    }
    path.pop();
    depth.insert(room.to_owned(), d);
    Ok(d)
}

#[test]
fn only_the_inline_test_module_is_left_out() {
    let text = "#[cfg(test)]\nmod roundtrip;\nuse crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n";
    let kept = &text[..test_block_start(text).unwrap()];
    assert_eq!(named_rooms(kept), ["a"]);
}
