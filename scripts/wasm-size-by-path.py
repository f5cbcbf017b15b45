#!/usr/bin/env python3
"""Code size of a .wasm by Rust path, from its name section: which crate or module takes the
download. Reads the rustc output before wasm-bindgen (it keeps the names), e.g.

    cargo build --release --target wasm32-unknown-unknown --lib
    python3 scripts/wasm-size-by-path.py target/wasm32-unknown-unknown/release/spectune.wasm 3

prints the bytes of function bodies per path prefix of the given depth (1: crates; 3:
`spectune::io::bpe`), largest first, then the data section (statics such as Unicode tables,
which carry no names)."""
import collections
import sys


def leb(b, i):
    value = shift = 0
    while True:
        x = b[i]
        i += 1
        value |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return value, i


def sections(data):
    found, i = {}, 8
    while i < len(data):
        sid, (size, i) = data[i], leb(data, i + 1)
        if sid == 0:
            n, j = leb(data, i)
            found[data[j:j + n].decode()] = (j + n, i + size)
        else:
            found[sid] = (i, i + size)
        i += size
    return found


def imported_functions(data, start):
    count, i = leb(data, start)
    functions = 0
    for _ in range(count):
        for _ in range(2):  # module and field names
            n, i = leb(data, i)
            i += n
        kind, i = data[i], i + 1
        if kind == 0:  # function: type index
            _, i = leb(data, i)
            functions += 1
        elif kind == 1:  # table: element type, limits
            flags, i = data[i + 1], i + 2
            _, i = leb(data, i)
            if flags & 1:
                _, i = leb(data, i)
        elif kind == 2:  # memory: limits
            flags, i = data[i], i + 1
            _, i = leb(data, i)
            if flags & 1:
                _, i = leb(data, i)
        elif kind == 3:  # global: type, mutability
            i += 2
    return functions


def function_names(data, start, end):
    names, i = {}, start
    while i < end:
        sub, (size, i) = data[i], leb(data, i + 1)
        if sub == 1:
            count, j = leb(data, i)
            for _ in range(count):
                index, j = leb(data, j)
                n, j = leb(data, j)
                names[index] = data[j:j + n].decode("utf8", "replace")
                j += n
        i += size
    return names


def path(mangled):
    """`_ZN8spectune2io3bpe...E` (legacy mangling) to its components."""
    if not mangled.startswith("_ZN"):
        return [mangled]
    parts, j = [], 3
    while j < len(mangled) and mangled[j].isdigit():
        k = j
        while mangled[k].isdigit():
            k += 1
        n = int(mangled[j:k])
        parts.append(mangled[k:k + n])
        j = k + n
    return parts


def main():
    data = open(sys.argv[1], "rb").read()
    depth = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    found = sections(data)
    if "name" not in found:
        sys.exit("no name section: use the .wasm rustc wrote, before wasm-bindgen and wasm-opt")
    first = imported_functions(data, found[2][0]) if 2 in found else 0
    names = function_names(data, *found["name"])
    count, i = leb(data, found[10][0])
    totals = collections.Counter()
    for k in range(count):
        size, j = leb(data, i)
        totals["::".join(path(names.get(first + k, "?"))[:depth])] += size + (j - i)
        i = j + size
    print(f"{sum(totals.values()):>9} code, all functions")
    for key, size in totals.most_common(40):
        print(f"{size:>9} {key[:110]}")
    if 11 in found:
        print(f"{found[11][1] - found[11][0]:>9} data section (statics, unnamed)")


main()
