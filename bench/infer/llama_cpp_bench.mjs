// llama.cpp through node-llama-cpp on a GGUF file, for bench/infer/run_infer_bench.sh: the same
// prompt (token ids), greedy decoding, batch 1, CPU only, a fixed thread count.
//
//   node bench/infer/llama_cpp_bench.mjs --npm build/npm --model M.gguf --ids 1,2,3 \
//       [--new-tokens 32] [--threads 2]
//
// node-llama-cpp is loaded from <npm>/node_modules (not from beside this file). Timing, as
// switchyard generate reports it: prefill = from the start of the evaluation of the prompt to the
// first generated token (one batch of up to 512 tokens, llama.cpp's default); decode tokens/s =
// (new tokens - 1) / time of the steps after it, both from llama.cpp's own counters (see below).
// A warm-up generation (the first 8 prompt tokens, 2 new tokens) runs first on a context of its
// own. Prints one JSON line.
import fs from "node:fs";
import path from "node:path";
import {pathToFileURL} from "node:url";
import {performance} from "node:perf_hooks";

function args(argv) {
  const out = {npm: "build/npm", newTokens: 32, threads: 2};
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (v === undefined) throw new Error(`${k}: missing value`);
    if (k === "--npm") out.npm = v;
    else if (k === "--model") out.model = v;
    else if (k === "--ids") out.ids = v.split(",").map(Number);
    else if (k === "--new-tokens") out.newTokens = Number(v);
    else if (k === "--threads") out.threads = Number(v);
    else throw new Error(`unknown flag ${k}`);
  }
  if (!out.model || !out.ids) throw new Error("--model and --ids are required");
  return out;
}

// The package's ESM entry point under <npm>/node_modules/node-llama-cpp.
function entryOf(npm) {
  const dir = path.resolve(npm, "node_modules", "node-llama-cpp");
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  let rel = null;
  const e = pkg.exports && (pkg.exports["."] ?? pkg.exports);
  if (typeof e === "string") rel = e;
  else if (e) rel = e.import?.default ?? e.import ?? e.default ?? e.node;
  if (typeof rel !== "string") rel = pkg.module ?? pkg.main ?? "dist/index.js";
  return {url: pathToFileURL(path.join(dir, rel)).href, version: pkg.version};
}

async function generate(sequence, ids, newTokens) {
  const t0 = performance.now();
  let t1 = t0;
  const out = [];
  for await (const token of sequence.evaluate(ids, {temperature: 0})) {
    if (out.length === 0) t1 = performance.now();
    out.push(token);
    if (out.length >= newTokens) break;
  }
  return {out, prefill_s: (t1 - t0) / 1e3, decode_s: (performance.now() - t1) / 1e3};
}

const a = args(process.argv.slice(2));
const {url, version} = entryOf(a.npm);
const {getLlama, LlamaLogLevel} = await import(url);
// llama.cpp's own counters (llama_perf_context_print, through printTimings) are the numbers
// reported: wall-clock times around node-llama-cpp's iterator moved work between "prefill" and
// "decode" in our runs (a decode faster than the read bandwidth allows), so they are kept only
// as wall_prefill_s / wall_decode_s.
const logs = [];
const levels = LlamaLogLevel ?? {};
const tLoad = performance.now();
const llama = await getLlama({
  gpu: false, build: "never", maxThreads: a.threads,
  logLevel: levels.info ?? "info",
  logger: (level, message) => {
    logs.push(String(message));
    if (level === (levels.error ?? "error") || level === (levels.fatal ?? "fatal"))
      process.stderr.write(String(message));
  },
});
const model = await llama.loadModel({modelPath: a.model, gpuLayers: 0});
const options = {
  contextSize: a.ids.length + a.newTokens + 64,
  batchSize: Math.min(512, a.ids.length),
  threads: {ideal: a.threads, min: a.threads},
};
const loadS = (performance.now() - tLoad) / 1e3;
const warm = await model.createContext(options);  // warm-up on its own context
await generate(warm.getSequence(), a.ids.slice(0, 8), 2);
await warm.dispose();
const context = await model.createContext({...options, performanceTracking: true});
const r = await generate(context.getSequence(), a.ids, a.newTokens);
logs.length = 0;
await context.printTimings();
const text = logs.join("");
const perf = (what) => {  // "prompt eval time = 1234.56 ms / 512 tokens"
  const m = text.match(new RegExp(`${what} time =\\s*([\\d.]+) ms /\\s*(\\d+)`));
  return m ? {ms: Number(m[1]), n: Number(m[2])} : null;
};
const pe = perf("prompt eval"), ev = perf("[^t] eval") ?? perf("\\beval");
console.log(JSON.stringify({
  impl: "llama.cpp", via: `node-llama-cpp ${version}`, threads: a.threads,
  prompt_tokens: a.ids.length, new_tokens: r.out.length,
  prefill_tps: pe ? pe.n / (pe.ms / 1e3) : a.ids.length / r.prefill_s,
  decode_tps: ev && ev.n > 0 ? ev.n / (ev.ms / 1e3)
                             : (r.out.length > 1 ? (r.out.length - 1) / r.decode_s : null),
  timing: pe && ev ? "llama.cpp perf counters" : "wall clock around the iterator",
  perf_prompt_eval: pe, perf_eval: ev,
  wall_prefill_s: r.prefill_s, wall_decode_s: r.decode_s,
  load_s: loadS, generated: r.out,
}));
await context.dispose();
await model.dispose();
await llama.dispose();
