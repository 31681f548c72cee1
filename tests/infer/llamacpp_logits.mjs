// llama.cpp's logits for test_gguf_llamacpp.py: loads a GGUF with node-llama-cpp's prebuilt CPU
// llama.cpp (never building or downloading anything), evaluates each sequence of token ids in a
// fresh context and prints one JSON object on stdout: {"logits": [seq][position][vocab]}, the
// next-token logits after every position, and {"info": ...} about the llama.cpp build.
//
//   node llamacpp_logits.mjs NPM_DIR MODEL_GGUF IDS_JSON [TEXTS_JSON]
//
// IDS_JSON: [[id, ...], ...] (may be empty). TEXTS_JSON: ["text", ...], tokenised by llama.cpp
// without special-token parsing into {"tokens": [[id, ...], ...]}. NPM_DIR holds node_modules
// (scripts/install-npm-deps.sh).
// Exit codes: 0 ok, 3 the GGUF did not load (message on stderr), 2 usage or any other failure.
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [npmDir, modelPath, idsPath, textsPath] = process.argv.slice(2);
if (!idsPath) {
  console.error("usage: node llamacpp_logits.mjs NPM_DIR MODEL_GGUF IDS_JSON");
  process.exit(2);
}
// Nothing may be fetched or compiled at test time.
process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = "true";
const entry = path.join(path.resolve(npmDir), "node_modules", "node-llama-cpp", "dist", "index.js");
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);

const sequences = JSON.parse(readFileSync(idsPath, "utf8"));
const llama = await getLlama({
  gpu: false,
  build: "never",
  usePrebuiltBinaries: true,
  progressLogs: false,
  logLevel: LlamaLogLevel.error,
  logger: (level, message) => {
    if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal)
      process.stderr.write(`llama.cpp: ${message}\n`);
  },
});
let model;
try {
  model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true });
} catch (e) {
  console.error(`llama.cpp could not load ${modelPath}: ${e?.message ?? e}`);
  process.exit(3);
}
const arch = model.fileInfo.metadata.general.architecture;
const vocab = Number(model.fileInfo.metadata[arch].vocab_size);
const longest = Math.max(0, ...sequences.map((s) => s.length));
const out = [];
for (const ids of sequences) {
  // One context per sequence: nothing cached from the previous one.
  const context = await model.createContext({
    contextSize: Math.max(64, longest + 8),
    batchSize: Math.max(64, longest + 8),
    sequences: 1,
    threads: 2,
    flashAttention: false,
    // F32 keys and values: the default F16 cache alone costs ~5e-4 relative in the logits.
    experimentalKvCacheKeyType: "F32",
    experimentalKvCacheValueType: "F32",
  });
  const seq = context.getSequence();
  const input = ids.map((t) => [t, { generateNext: { logits: true } }]);
  const res = await seq.controlledEvaluate(input);
  const rows = res.map((r, i) => {
    const logits = r?.next?.logits;
    if (!logits) throw new Error(`no logits at position ${i}`);
    const row = new Array(vocab).fill(null);
    for (const [token, value] of logits) row[token] = value;
    if (row.some((v) => v === null))
      throw new Error(`position ${i}: llama.cpp returned ${logits.size} of ${vocab} logits`);
    return row;
  });
  out.push(rows);
  await context.dispose();
}
const info = {
  llama_cpp: llama.llamaCppRelease,
  build: llama.buildType,
  gpu: llama.gpu,
  architecture: arch,
};
const tokens = textsPath
  ? JSON.parse(readFileSync(textsPath, "utf8")).map((text) => Array.from(model.tokenize(text, false)))
  : undefined;
process.stdout.write(JSON.stringify({ info, logits: out, tokens }) + "\n");
await model.dispose();
await llama.dispose();
