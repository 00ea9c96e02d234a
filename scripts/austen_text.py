#!/usr/bin/env python3
"""Extracts Jane Austen's six novels from r-cran-janeaustenr's R lazy-load database as text files.

The package keeps each novel as one R character vector (one element per line of the Project
Gutenberg text) in data/Rdata.rdb, indexed by data/Rdata.rdx. This reads both without R:
  - Rdata.rdx: a gzip- or zlib-compressed R serialization of list(variables = <name -> (offset,
    length)>, references, compressed);
  - each variable's block of Rdata.rdb: a 4-byte big-endian uncompressed length, then zlib data
    (R's compression type 1) holding the serialized character vector.
The R serialization (XDR binary, format "X\\n", versions 2 and 3) is decoded for the few types
these files use: character vectors, strings, integer / logical / real vectors, generic vectors,
pairlists (attributes), symbols and references.

usage: austen_text.py <janeaustenr package dir> <output dir>
Writes <output dir>/<novel>.txt (UTF-8, one line per element; NA elements as empty lines) for
emma, mansfieldpark, northangerabbey, persuasion, prideprejudice and sensesensibility, each
through a temporary file, and prints each novel's line count.
"""

import gzip
import os
import struct
import sys
import zlib

NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
          "sensesensibility")

# SEXP types (R Internals, "Serialization formats").
NILSXP, SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 0, 1, 2, 9, 10, 13, 14, 16, 19
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, EMPTYENV_SXP, BASEENV_SXP = 255, 254, 253, 242, 241
MISSINGARG_SXP, BASENAMESPACE_SXP, UNBOUNDVALUE_SXP = 251, 247, 252
ATTRLISTSXP, ALTREP_SXP = 239, 238
NA_INTEGER = -2147483648


class FormatError(Exception):
    pass


class Reader:
    def __init__(self, data, what):
        self.data, self.pos, self.what, self.refs = data, 0, what, []

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError(f"{self.what}: truncated at byte {self.pos} (wanted {n} more)")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int()
        if n == -1:  # long vector: two more words
            hi, lo = struct.unpack(">II", self.take(8))
            n = (hi << 32) | lo
        if n < 0 or n > len(self.data):
            raise FormatError(f"{self.what}: implausible length {n}")
        return n

    def header(self):
        if self.take(2) != b"X\n":
            raise FormatError(f"{self.what}: not an XDR R serialization (expected 'X\\n')")
        version = self.int()
        self.int()  # R version that wrote it
        self.int()  # minimal R version to read it
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            raise FormatError(f"{self.what}: serialization version {version}, expected 2 or 3")

    def item(self):
        flags = self.int()
        kind = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if kind in (NILVALUE_SXP, GLOBALENV_SXP, EMPTYENV_SXP, BASEENV_SXP, MISSINGARG_SXP,
                    BASENAMESPACE_SXP, UNBOUNDVALUE_SXP):
            return None
        if kind == REFSXP:
            index = flags >> 8
            if index == 0:
                index = self.int()
            if not 1 <= index <= len(self.refs):
                raise FormatError(f"{self.what}: reference {index} to nothing")
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.item()
            self.refs.append(name)
            return name
        if kind in (LISTSXP, ATTRLISTSXP):
            out = []
            while kind in (LISTSXP, ATTRLISTSXP):
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out.append((tag, self.item()))
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))
            if kind != NILVALUE_SXP:
                raise FormatError(f"{self.what}: pairlist ends in type {kind}")
            return out
        if kind == CHARSXP:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            if n < 0:
                raise FormatError(f"{self.what}: string of length {n}")
            raw = self.take(n)
            latin1 = bool(flags & (1 << (12 + 2)))  # LATIN1_MASK (1 << 2) of the levels (bits 12..27)
            return raw.decode("latin-1" if latin1 else "utf-8", errors="strict")
        if kind in (LGLSXP, INTSXP):
            n = self.length()
            value = list(struct.unpack(f">{n}i", self.take(4 * n)))
        elif kind == REALSXP:
            n = self.length()
            value = list(struct.unpack(f">{n}d", self.take(8 * n)))
        elif kind in (STRSXP, VECSXP):
            n = self.length()
            value = [self.item() for _ in range(n)]
        elif kind == ALTREP_SXP:
            raise FormatError(f"{self.what}: ALTREP objects are not supported")
        else:
            raise FormatError(f"{self.what}: unsupported R type {kind}")
        attrs = self.item() if has_attr else None
        if attrs:
            names = dict(attrs).get("names")
            if names is not None and kind == VECSXP:
                return dict(zip(names, value))
        return value


def unserialize(data, what):
    r = Reader(data, what)
    r.header()
    return r.item()


def read_index(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        data = gzip.decompress(raw)
    else:
        data = zlib.decompress(raw[4:])
    index = unserialize(data, path)
    if not isinstance(index, dict) or "variables" not in index:
        raise FormatError(f"{path}: no 'variables' in the lazy-load index")
    return index["variables"]


def read_block(rdb, offset, length, what):
    with open(rdb, "rb") as f:
        f.seek(offset)
        block = f.read(length)
    if len(block) != length or length < 5:
        raise FormatError(f"{rdb}: {what}'s block at {offset} is truncated")
    size = struct.unpack(">I", block[:4])[0]
    data = zlib.decompress(block[4:])
    if len(data) != size:
        raise FormatError(f"{rdb}: {what} unpacks to {len(data)} bytes, header says {size}")
    return unserialize(data, f"{rdb}: {what}")


def main(argv):
    if len(argv) != 3:
        print("usage: austen_text.py <janeaustenr package dir> <output dir>", file=sys.stderr)
        return 2
    pkg, out = argv[1], argv[2]
    rdx, rdb = os.path.join(pkg, "data", "Rdata.rdx"), os.path.join(pkg, "data", "Rdata.rdb")
    for p in (rdx, rdb):
        if not os.path.isfile(p):
            print(f"austen_text.py: {p} is missing (expected r-cran-janeaustenr's data)",
                  file=sys.stderr)
            return 1
    try:
        variables = read_index(rdx)
        os.makedirs(out, exist_ok=True)
        for novel in NOVELS:
            if novel not in variables:
                raise FormatError(f"{rdx}: no variable '{novel}'")
            offset, length = variables[novel]
            lines = read_block(rdb, offset, length, novel)
            if not isinstance(lines, list) or not all(l is None or isinstance(l, str) for l in lines):
                raise FormatError(f"{rdb}: {novel} is not a character vector")
            target = os.path.join(out, novel + ".txt")
            with open(target + ".tmp", "w", encoding="utf-8", newline="\n") as f:
                for line in lines:
                    f.write((line or "") + "\n")
            os.replace(target + ".tmp", target)
            print(f"{novel} {len(lines)}")
    except (FormatError, OSError, zlib.error, UnicodeDecodeError, struct.error) as e:
        print(f"austen_text.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
