#!/usr/bin/env python3
"""Import cycles in src/, read from the code's own `crate::` paths (issue 33).

    python3 scripts/module_cycles.py [--depth 1] [--inside events,pipeline]

Each `.rs` file under src/ is a module (`src/a/b.rs` and `src/a/b/mod.rs` are `a::b`).
Every `crate::x::y` path in a file (in `use` lines or inline, comments left out) is an
edge from that file's module to `x` (depth 1: top-level modules) or to `x::y` inside the
folders named by --inside (events, events::sinks, pipeline). Prints the strongly
connected components with more than one member (the cycles) and, for each, the files
that make its edges. Exit 1 if there is any: `make test` runs it first, so a new cycle
fails CI. Test modules count: a `#[cfg(test)]` block that imports upwards is an edge too.
"""
import argparse
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def expand_use(text):
    """`crate::a::{b, c::d}` -> crate::a::b, crate::a::c::d (one level of braces)."""
    out = []
    for m in re.finditer(r"crate::((?:\w+::)*)\{([^{}]*)\}", text):
        for part in m.group(2).split(","):
            part = part.strip()
            if part:
                out.append("crate::" + m.group(1) + part)
    return out


def node(path_parts, inside, depth, known):
    """The graph node of a path: its top-level module, or inside a split folder (the
    longest of --inside that holds it) the folder's child module."""
    for folder in sorted(inside, key=lambda f: -f.count("::")):
        parts = folder.split("::")
        n = len(parts)
        if path_parts[:n] == parts and len(path_parts) > n:
            child = "::".join(path_parts[: n + 1])
            if child in known:
                return child
    return path_parts[0] if depth == 1 else "::".join(path_parts[:depth])


def tarjan(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--inside", default="events,events::sinks,pipeline")
    args = ap.parse_args()
    inside = set(filter(None, args.inside.split(",")))
    graph, why = {}, {}
    known = set()
    for d, _, fs in os.walk(SRC):
        for f in fs:
            if f.endswith(".rs"):
                mod = module_of(os.path.join(d, f))
                known.update("::".join(mod[:k]) for k in range(1, len(mod) + 1))
    for d, _, files in os.walk(SRC):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(d, f)
            mod = module_of(path)
            if not mod:
                continue  # lib.rs / main.rs: the top
            src = node(mod, inside, args.depth, known)
            text = strip_comments(open(path).read())
            # `super::` and `self::` paths, written out from the crate root
            parent = mod[:-1]
            if parent:
                text = re.sub(r"\bsuper::", "crate::" + "::".join(parent) + "::", text)
            if path.endswith("mod.rs"):
                text = re.sub(r"\bself::", "crate::" + "::".join(mod) + "::", text)
            targets = expand_use(text) + re.findall(r"crate::(?:\w+::)*\w+", text)
            for t in targets:
                parts = [p for p in t.split("::")[1:] if p]
                if not parts or parts[0] in ("self", "super"):
                    continue
                dst = node(parts, inside, args.depth, known)
                if dst == src:
                    continue
                graph.setdefault(src, set()).add(dst)
                graph.setdefault(dst, set())
                why.setdefault((src, dst), set()).add(os.path.relpath(path, os.path.join(SRC, "..")))
    cycles = [c for c in tarjan(graph) if len(c) > 1]
    # and inside each split folder on its own: its files among themselves
    for folder in sorted(inside):
        depth_in = folder.count("::") + 1
        members = {v for v in graph if v.startswith(folder + "::") and v.count("::") == depth_in}
        sub = {v: graph[v] & members for v in members}
        cycles += [c for c in tarjan(sub) if len(c) > 1 and c not in cycles]
    for c in sorted(cycles, key=len, reverse=True):
        print(f"cycle of {len(c)}: {', '.join(c)}")
        members = set(c)
        for a in c:
            for b in sorted(graph[a] & members):
                print(f"  {a} -> {b}: {', '.join(sorted(why[(a, b)]))}")
    if not cycles:
        print("no import cycles")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
