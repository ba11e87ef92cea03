#!/usr/bin/env python3
"""The import graph between ciosync's top-level modules ("rooms").

A room is a file `src/NAME.rs` or a folder `src/NAME/`. An arrow A -> B
means some file of room A names `crate::B` (in a `use` or a path). The
script prints every arrow, the circles (strongly connected groups of more
than one room) and the arrows inside them: the ones that keep a room from
being a layer below the rooms it imports.

    scripts/module-graph.py            # summary and circles
    scripts/module-graph.py --arrows   # also every arrow with its count
    scripts/module-graph.py --check    # exit 1 if any circle exists

Test code (`#[cfg(test)]` modules after their marker, `*_tests.rs`,
`tests.rs`) is left out: tests may reach anywhere.
"""
import os
import re
import sys
from collections import defaultdict

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
ROOT_FILES = {"lib.rs", "main.rs"}


def room_of(path):
    rel = os.path.relpath(path, SRC)
    first = rel.split(os.sep)[0]
    if first in ROOT_FILES or first == "bin":
        return None
    return first[:-3] if first.endswith(".rs") else first


def production_text(path):
    name = os.path.basename(path)
    if name == "tests.rs" or name.endswith("_tests.rs"):
        return ""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    marker = text.find("#[cfg(test)]")
    return text if marker < 0 else text[:marker]


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def group_heads(body):
    """Top-level names in `{a, b::c, d::{e, f}}` (without the braces)."""
    heads, depth, current = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            heads.append(current)
            current = ""
            continue
        if depth == 0:
            current += ch
    heads.append(current)
    return [h.strip().split("::")[0].strip() for h in heads if h.strip()]


def named_rooms(text):
    names = []
    for m in re.finditer(r"\bcrate::(\w+|\{)", text):
        if m.group(1) != "{":
            names.append(m.group(1))
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        names.extend(group_heads(text[m.end():i - 1]))
    return names


def graph():
    rooms = set()
    arrows = defaultdict(int)
    for dirpath, _, files in os.walk(SRC):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            room = room_of(path)
            if room is None:
                continue
            rooms.add(room)
            for target in named_rooms(strip_comments(production_text(path))):
                if target not in ("self", "super") and target != room:
                    arrows[(room, target)] += 1
    arrows = {k: v for k, v in arrows.items() if k[1] in rooms}
    return rooms, arrows


def circles(rooms, arrows):
    """Tarjan's strongly connected components with more than one room."""
    out = defaultdict(list)
    for a, b in arrows:
        out[a].append(b)
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in out[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(rooms):
        if v not in index:
            visit(v)
    return found


def main():
    rooms, arrows = graph()
    groups = circles(rooms, arrows)
    inside = sorted(
        (a, b) for (a, b) in arrows if any(a in g and b in g for g in groups)
    )
    print(f"rooms: {len(rooms)}, arrows: {len(arrows)}, "
          f"circles: {len(groups)}, arrows inside circles: {len(inside)}")
    for g in groups:
        print("circle:", " ".join(g))
    for a, b in inside:
        print(f"  {a} -> {b} ({arrows[(a, b)]})")
    if "--arrows" in sys.argv:
        for (a, b), n in sorted(arrows.items()):
            print(f"{a} -> {b} ({n})")
    if "--check" in sys.argv and groups:
        sys.exit(1)


if __name__ == "__main__":
    main()
