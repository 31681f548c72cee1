#!/usr/bin/env bash
# Builds switchyard's default byte-level corpus from Debian packages (Debian 12, run as root to
# install what is missing). Four domains, one label per document:
#   prose       fortunes (one document per fortune) and /usr/share/common-licenses (one per file)
#   code        C and C++ headers of libc6-dev and libstdc++-12-dev (one per file, cut at 64 KiB)
#   dictionary  WordNet glosses, "word, word (pos.): gloss", one document per 50 synsets
#   manual      man{2,3,5,7} pages of manpages and manpages-dev (system calls, libc), as plain text
#
# Output (default data/corpus/, replaced as a whole): train.bytes, val.bytes, manifest.json.
# Each split file is its documents concatenated; every document ends with exactly one blank line
# ("\n\n"), which counts as part of that document, so the manifest's document table
# [[offset, length, domain_index], ...] tiles the file and every byte has a domain.
#
# Deterministic: documents are enumerated in sorted path order, a domain's byte budget is filled
# greedily in the order of sha256("select:" + id) (a spread-out sample instead of the alphabetic
# head), and a document goes to validation when sha256("split:" + id) mod 1000 < 50 (~5%); id is
# "<source path>#<index in that file>". No timestamps, so the same package versions give
# byte-identical files.
#
# Usage: scripts/build-corpus.sh [OUT_DIR]   (env: CORPUS_BUDGET_MIB, per domain, default 6)
set -euo pipefail
cd "$(dirname "$0")/.."
out_dir="${1:-data/corpus}"
budget_mib="${CORPUS_BUDGET_MIB:-6}"
[[ "$budget_mib" =~ ^[1-9][0-9]*$ ]] || { echo "build-corpus: CORPUS_BUDGET_MIB must be a positive integer, got '$budget_mib'" >&2; exit 2; }

bash scripts/install-deps.sh base-files fortunes fortunes-min wordnet-base manpages manpages-dev \
  libc6-dev libstdc++-12-dev gzip python3

exec /usr/bin/python3 - "$out_dir" "$budget_mib" <<'PY'
import gzip, hashlib, json, os, re, shutil, subprocess, sys

out_dir, budget = sys.argv[1], int(sys.argv[2]) * 1024 * 1024
SEP = "\n\n"
CODE_CAP = 64 * 1024
VAL_PER_MILLE = 50
SYNSETS_PER_DOC = 50


def dpkg_version(pkg):
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], check=True,
                          capture_output=True, text=True).stdout.strip()


def dpkg_files(pkg, pattern):
    """Regular files (no symlinks: they would duplicate documents) of `pkg` matching `pattern`."""
    listing = subprocess.run(["dpkg", "-L", pkg], check=True, capture_output=True,
                             text=True).stdout.splitlines()
    rx = re.compile(pattern)
    return sorted(p for p in listing
                  if rx.fullmatch(p) and os.path.isfile(p) and not os.path.islink(p))


def read_text(path):
    # surrogateescape keeps any non-UTF-8 byte exactly as it was.
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8", "surrogateescape")


def finish(text):
    """One document's bytes: trailing whitespace dropped, then the blank-line separator."""
    text = text.replace("\r\n", "\n").rstrip()
    return (text + SEP).encode("utf-8", "surrogateescape") if text else None


# ---- prose -------------------------------------------------------------------------------------
def prose_docs():
    for pkg in ("fortunes", "fortunes-min"):
        for path in dpkg_files(pkg, r"/usr/share/games/fortunes/[^/]+"):
            if path.endswith(".dat"):
                continue
            # A fortune file separates its entries with lines holding a single '%'.
            entries = re.split(r"(?m)^%[ \t]*\n", read_text(path) + "\n")
            for i, entry in enumerate(entries):
                doc = finish(entry)
                if doc:
                    yield f"{path}#{i}", doc
    for path in dpkg_files("base-files", r"/usr/share/common-licenses/[^/]+"):
        doc = finish(read_text(path))
        if doc:
            yield f"{path}#0", doc


# ---- code --------------------------------------------------------------------------------------
def code_docs():
    paths = dpkg_files("libc6-dev", r"/usr/include/.+") + \
        dpkg_files("libstdc++-12-dev", r"/usr/include/.+")
    for path in sorted(paths):
        with open(path, "rb") as f:
            data = f.read()
        if b"\0" in data:
            continue
        if len(data) > CODE_CAP:  # cut at the last line end inside the cap
            cut = data.rfind(b"\n", 0, CODE_CAP)
            data = data[:cut + 1 if cut > 0 else CODE_CAP]
        doc = finish(data.decode("utf-8", "surrogateescape"))
        if doc:
            yield f"{path}#0", doc


# ---- dictionary --------------------------------------------------------------------------------
POS = {"n": "n.", "v": "v.", "a": "adj.", "s": "adj.", "r": "adv."}


def synset_line(line):
    # "offset lex_filenum ss_type w_cnt(hex) word lex_id ... | gloss"
    head, _, gloss = line.partition("|")
    fields = head.split()
    count = int(fields[3], 16)
    words = [re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in fields[4:4 + 2 * count:2]]
    return f"{', '.join(words)} ({POS[fields[2]]}): {gloss.strip()}"


def dictionary_docs():
    for path in dpkg_files("wordnet-base", r"/usr/share/wordnet/data\.(noun|verb|adj|adv)"):
        # The license header's lines start with two spaces; synset lines start with a digit.
        synsets = [synset_line(l) for l in read_text(path).splitlines() if l[:1].isdigit()]
        for i in range(0, len(synsets), SYNSETS_PER_DOC):
            doc = finish("\n".join(synsets[i:i + SYNSETS_PER_DOC]))
            if doc:
                yield f"{path}#{i // SYNSETS_PER_DOC}", doc


# ---- manual ------------------------------------------------------------------------------------
CHARS = {"em": "--", "en": "-", "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'",
         "bu": "*", "co": "(c)", "rg": "(R)", "tm": "(TM)", "mu": "x", "+-": "+-", "<=": "<=",
         ">=": ">=", "!=": "!=", "->": "->", "<-": "<-", "ti": "~", "ha": "^", "rs": "\\",
         "lB": "[", "rB": "]", "lC": "{", "rC": "}", "la": "<", "ra": ">", "hy": "-", "dg": "+"}
ESCAPE = re.compile(r"""\\(?:f(?:\[[^\]]*\]|\(..|.)      # font changes
                          |s[+-]?\d                      # size changes
                          |\[([^\]]*)\]                  # \[name] characters
                          |\((..)                        # \(xx characters
                          |\*(?:\((..)|\[([^\]]*)\]|(.)) # strings
                          |(.))""", re.X)


def inline(text):
    def sub(m):
        name = m.group(1) or m.group(2) or m.group(3) or m.group(4) or m.group(5)
        if name is not None:
            return CHARS.get(name, "")
        c = m.group(6)
        if c is None:
            return ""  # font or size change
        return {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "t": "\t",
                "'": "'", "`": "`", ".": "."}.get(c, "")  # \& \% \c \| \^ \: vanish
    return ESCAPE.sub(sub, text)


def macro_args(rest):
    return [a[1:-1] if a.startswith('"') else a for a in re.findall(r'"[^"]*"?|\S+', rest)]


def roff_to_text(src):
    out, in_table_format = [], False
    for line in src.splitlines():
        if line.startswith((".\\\"", "'\\\"", "\\\"")):
            continue  # comments
        if in_table_format:  # tbl options and format lines end with the line ending in '.'
            in_table_format = not line.rstrip().endswith(".")
            continue
        if line.startswith((".", "'")):
            m = re.match(r"[.'][ \t]*(\S*)[ \t]*(.*)", line)
            name, args = m.group(1), macro_args(m.group(2))
            if name in ("B", "I", "SM", "SB"):
                out.append(inline(" ".join(args)))
            elif name in ("BR", "RB", "IR", "RI", "BI", "IB"):
                out.append(inline("".join(args)))
            elif name in ("SH", "SS"):
                out += ["", inline(" ".join(args))]
            elif name in ("PP", "P", "LP", "sp"):
                out.append("")
            elif name in ("TP", "IP"):
                out.append("")
                if name == "IP" and args:
                    out.append(inline(args[0]))
            elif name == "TS":
                in_table_format = True
            elif name == "UR" and args:
                out.append(args[0])
            continue  # every other request only formats
        line = re.sub(r"^T\{|T\}$", "", line)  # tbl text blocks
        out.append(inline(line))
    text = "\n".join(l.rstrip() for l in out)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def manual_docs():
    paths = dpkg_files("manpages", r"/usr/share/man/man[2357]/[^/]+\.gz") + \
        dpkg_files("manpages-dev", r"/usr/share/man/man[2357]/[^/]+\.gz")
    for path in sorted(paths):
        src = read_text(path)
        if re.fullmatch(r"\s*\.so\s+\S+\s*", src):
            continue  # an alias page: its text is another page's
        doc = finish(roff_to_text(src))
        if doc:
            yield f"{path}#0", doc


DOMAINS = [
    ("prose", prose_docs, [("fortunes", ["/usr/share/games/fortunes/*"]),
                           ("fortunes-min", ["/usr/share/games/fortunes/*"]),
                           ("base-files", ["/usr/share/common-licenses/*"])]),
    ("code", code_docs, [("libc6-dev", ["/usr/include/**"]),
                         ("libstdc++-12-dev", ["/usr/include/**"])]),
    ("dictionary", dictionary_docs, [("wordnet-base", ["/usr/share/wordnet/data.{noun,verb,adj,adv}"])]),
    ("manual", manual_docs, [("manpages", ["/usr/share/man/man{2,3,5,7}/*.gz"]),
                             ("manpages-dev", ["/usr/share/man/man{2,3,5,7}/*.gz"])]),
]


def key(salt, doc_id):
    return hashlib.sha256(f"{salt}:{doc_id}".encode("utf-8", "surrogateescape")).digest()


splits = {"train": [], "val": []}  # (domain, id, bytes)
sources, stats = [], []
for d, (name, make, pkgs) in enumerate(DOMAINS):
    docs = list(make())
    if not docs:  # e.g. a minimal image whose dpkg config excludes /usr/share/man
        sys.exit(f"build-corpus: domain '{name}' found no documents; are the files of "
                 f"{', '.join(p for p, _ in pkgs)} present (see path-exclude in /etc/dpkg/dpkg.cfg.d)?")
    available = sum(len(b) for _, b in docs)
    chosen, used = [], 0
    for doc_id, data in sorted(docs, key=lambda x: key("select", x[0])):
        if used + len(data) <= budget:
            chosen.append((doc_id, data))
            used += len(data)
    row = {"train": [0, 0], "val": [0, 0]}
    for doc_id, data in sorted(chosen):
        split = "val" if int.from_bytes(key("split", doc_id)[:8], "big") % 1000 < VAL_PER_MILLE \
            else "train"
        splits[split].append((d, doc_id, data))
        row[split][0] += 1
        row[split][1] += len(data)
    stats.append((name, len(docs), available, row))
    sources.append({
        "domain": name,
        "budget_bytes": budget,
        "available": {"documents": len(docs), "bytes": available},
        "selected": {"documents": len(chosen), "bytes": used},
        "packages": [{"package": p, "version": dpkg_version(p), "paths": g} for p, g in pkgs],
    })

parent = os.path.dirname(os.path.abspath(out_dir))
os.makedirs(parent, exist_ok=True)
tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp.{os.getpid()}")
shutil.rmtree(tmp, ignore_errors=True)
os.makedirs(tmp)
split_meta = {}
for split, docs in splits.items():
    fname = f"{split}.bytes"
    table, offset, h = [], 0, hashlib.sha256()
    with open(os.path.join(tmp, fname), "wb") as f:
        for d, _, data in docs:  # already grouped by domain, sorted by id
            f.write(data)
            h.update(data)
            table.append([offset, len(data), d])
            offset += len(data)
        f.flush()
        os.fsync(f.fileno())
    split_meta[split] = {"file": fname, "size": offset, "sha256": h.hexdigest(), "documents": table}

manifest = {
    "format": "switchyard-byte-corpus",
    "version": 1,
    "vocab_size": 256,
    "domains": [name for name, *_ in DOMAINS],
    "document_separator": "each document ends with one blank line (\\n\\n), included in its length",
    "selection": "per domain: documents in sha256('select:'+id) order, greedily while within "
                 "budget_bytes; id = '<path>#<index>'",
    "split_rule": f"val when sha256('split:'+id)[0:8] (big-endian) mod 1000 < {VAL_PER_MILLE}",
    "splits": split_meta,
    "sources": sources,
}
# Document tables stay one compact line each; the rest is indented for people.
placeholders = {}
for split in split_meta:
    placeholders[split] = json.dumps(split_meta[split]["documents"], separators=(",", ":"))
    split_meta[split]["documents"] = f"@@DOCS_{split}@@"
text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True)
for split, table in placeholders.items():
    text = text.replace(f'"@@DOCS_{split}@@"', table)
with open(os.path.join(tmp, "manifest.json"), "w") as f:
    f.write(text + "\n")
    f.flush()
    os.fsync(f.fileno())

# A directory cannot be renamed over a non-empty one: move the old one aside first, then drop it.
old = None
if os.path.exists(out_dir):
    old = os.path.join(parent, f".{os.path.basename(out_dir)}.old.{os.getpid()}")
    os.rename(out_dir, old)
os.rename(tmp, out_dir)
if old:
    shutil.rmtree(old)

print(f"build-corpus: wrote {out_dir} (budget {budget} bytes per domain)")
print(f"{'domain':<12}{'available':>22}{'train docs':>12}{'train bytes':>13}"
      f"{'val docs':>10}{'val bytes':>11}")
for name, n, avail, row in stats:
    print(f"{name:<12}{f'{n} docs / {avail} B':>22}{row['train'][0]:>12}{row['train'][1]:>13}"
          f"{row['val'][0]:>10}{row['val'][1]:>11}")
tr = split_meta["train"]
va = split_meta["val"]
print(f"{'total':<12}{'':>22}{len(splits['train']):>12}{tr['size']:>13}"
      f"{len(splits['val']):>10}{va['size']:>11}")
for split in ("train", "val"):
    print(f"{split}: {split_meta[split]['file']} sha256 {split_meta[split]['sha256']}")
PY
