//! `docs/mutants.md` lists the mutants of the cores that the unit tests do
//! not catch, each with its reason, and `scripts/mutants.sh` (and CI's
//! check of a change) accepts exactly those. An entry whose mutant no
//! longer exists (the code changed, or it never matched: a typo) would
//! excuse nothing and mislead the reader, so every entry must name a mutant
//! `cargo mutants --list` still makes. `.ci/run` installs cargo-mutants and
//! CI fails without it; elsewhere the test says it skipped.

use std::process::Command;

use crate::support::tools;

/// `src/x.rs: replace …` (or `crates/NAME/src/x.rs: …`) from each
/// backquoted entry of the list's section.
fn listed_survivors(doc: &str) -> Vec<String> {
    let section = doc.split("\n## Surviving mutants").nth(1).expect("the section exists");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| {
            (quoted.starts_with("src/") || quoted.starts_with("crates/"))
                && quoted.contains(".rs: ")
        })
        .map(str::to_owned)
        .collect()
}

/// `src/x.rs:12:5: replace …` without its line and column.
fn without_position(line: &str) -> Option<String> {
    let (file, rest) = line.split_once(':')?;
    let mut parts = rest.splitn(3, ':');
    let (line_no, column, mutation) = (parts.next()?, parts.next()?, parts.next()?);
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (numeric(line_no) && numeric(column)).then(|| format!("{file}:{mutation}"))
}

#[test]
fn every_listed_survivor_is_a_mutant_cargo_mutants_makes() {
    let present = tools::runs("cargo", &["mutants", "--version"]);
    if !tools::available(
        present,
        "cargo-mutants",
        "cargo install --locked cargo-mutants",
        "that docs/mutants.md names real mutants",
    ) {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let doc = std::fs::read_to_string(format!("{root}/docs/mutants.md")).expect("docs/mutants.md");
    let output = Command::new("cargo")
        .args(["mutants", "--list"])
        .current_dir(root)
        .output()
        .expect("run cargo mutants --list");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cargo mutants --list failed: {stderr}");
    let made: Vec<String> =
        String::from_utf8_lossy(&output.stdout).lines().filter_map(without_position).collect();
    assert!(made.len() > 100, "the cores yield mutants: {made:?}");
    for entry in listed_survivors(&doc) {
        assert!(made.contains(&entry), "docs/mutants.md lists `{entry}`, which is no mutant now");
    }
}

#[test]
fn entries_are_read_as_scripts_mutants_sh_matches_them() {
    assert_eq!(
        without_position("src/sink/queue.rs:264:22: replace > with >= in Queue::ackable"),
        Some("src/sink/queue.rs: replace > with >= in Queue::ackable".to_owned())
    );
    let doc = "intro `src/a.rs: not this`\n## Surviving mutants\n- `src/b.rs: replace f -> bool \
               with true`: why\n- `crates/k/src/d.rs: delete !`: why\n- `cargo mutants`\n\
               ## After\n`src/c.rs: nor this`";
    assert_eq!(
        listed_survivors(doc),
        ["src/b.rs: replace f -> bool with true", "crates/k/src/d.rs: delete !"]
    );
}
