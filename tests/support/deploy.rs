//! Reading the files that ship ciosync and its emulator: YAML documents,
//! the Dockerfile's stages, and the code blocks of a README section, for the
//! tests that check them against each other and against the code.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text of a file under the repository's root.
pub fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of a YAML file (`---`-separated), empty ones left out.
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    yaml_text_documents(&text, &path.display().to_string())
}

/// Every non-empty document of YAML `text`; `what` names it in a panic.
pub fn yaml_text_documents(text: &str, what: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| {
            Value::deserialize(document).unwrap_or_else(|e| panic!("{what} is not valid YAML: {e}"))
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// The part of a Markdown text from the heading line `heading` (exact) to
/// the next heading of the same or a higher level.
pub fn markdown_section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start =
        text.find(&format!("\n{heading}\n")).unwrap_or_else(|| panic!("no heading {heading:?}"))
            + 1;
    let level = heading.chars().take_while(|c| *c == '#').count();
    let body = &text[start + heading.len()..];
    let end = body
        .lines()
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .find(|(_, line)| {
            let hashes = line.chars().take_while(|c| *c == '#').count();
            (1..=level).contains(&hashes) && line[hashes..].starts_with(' ')
        })
        .map_or(body.len(), |(at, _)| at);
    &text[start..start + heading.len() + end]
}

/// The fenced code blocks of `markdown` whose info string is `language`.
pub fn code_blocks(markdown: &str, language: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) if info.trim() == language => current = Some(String::new()),
            (None, Some(_)) => current = Some(String::from("\u{0}")), // another language
            (Some(block), Some(_)) => {
                if !block.starts_with('\u{0}') {
                    blocks.push(std::mem::take(block));
                }
                current = None;
            }
            (Some(block), None) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// One `FROM` stage of a Dockerfile.
#[derive(Debug)]
pub struct Stage {
    /// The image it starts from.
    pub from: String,
    /// Its `AS` name, if any.
    pub name: Option<String>,
    /// Its instructions after `FROM`, upper-case keyword and the rest, with
    /// continuation lines joined and comments left out.
    pub instructions: Vec<(String, String)>,
}

impl Stage {
    /// The arguments of every instruction `keyword`.
    pub fn all(&self, keyword: &str) -> Vec<&str> {
        let found = self.instructions.iter().filter(|(k, _)| k == keyword);
        found.map(|(_, rest)| rest.as_str()).collect()
    }

    /// The arguments of the one instruction `keyword`.
    pub fn one(&self, keyword: &str) -> &str {
        let found = self.all(keyword);
        assert_eq!(found.len(), 1, "one {keyword} in stage {:?}: {found:?}", self.name);
        found[0]
    }
}

/// The stages of a Dockerfile, in order.
pub fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => pending.push_str(&format!("{} ", part.trim())),
            None => logical.push(format!("{pending}{trimmed}")),
        }
        if !trimmed.ends_with('\\') {
            pending.clear();
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical.iter().filter(|l| !l.is_empty()) {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let (keyword, rest) = (keyword.to_ascii_uppercase(), rest.trim().to_owned());
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                [_] => None,
                _ => panic!("FROM {rest}: expected IMAGE [AS NAME]"),
            };
            stages.push(Stage { from: words[0].to_owned(), name, instructions: Vec::new() });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((keyword, rest));
        }
    }
    stages
}

/// An exec-form (JSON array) instruction's words.
pub fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|e| panic!("not exec form (a JSON array): {rest}: {e}"))
}
