// Reference encodings for test_tokenizer: loads a tokenizer.json with @huggingface/tokenizers
// (tokenizers.js) and prints, as one JSON object on stdout, the id -> token table and, for each
// text of a JSON array, the ids with and without special tokens and their decodes.
//
//   node tokenizer_reference.mjs NPM_DIR TOKENIZER_JSON TEXTS_JSON
//
// NPM_DIR holds node_modules (scripts/install-npm-deps.sh installs it into build/npm).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const [npmDir, tokenizerPath, textsPath] = process.argv.slice(2);
if (!textsPath) {
  console.error("usage: node tokenizer_reference.mjs NPM_DIR TOKENIZER_JSON TEXTS_JSON");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(npmDir), "package.json"));
const { Tokenizer } = require("@huggingface/tokenizers");

// tokenizer.json alone: clean_up_tokenization_spaces is a transformers (tokenizer_config.json)
// option that the Rust tokenizers library never applies, and tokenizers.js defaults it to true.
const tokenizer = new Tokenizer(JSON.parse(readFileSync(tokenizerPath, "utf8")), {
  clean_up_tokenization_spaces: false,
});
// tokenizers.js refuses to decode an empty id list; the empty text decodes to "".
const decode = (ids, skip) =>
  ids.length === 0 ? "" : tokenizer.decode(ids, { skip_special_tokens: skip });

const vocab = [];
for (let id = 0; id < tokenizer.model.vocab.length; ++id) {
  vocab.push(tokenizer.id_to_token(id) ?? null);
}
const results = JSON.parse(readFileSync(textsPath, "utf8")).map((text) => {
  const ids = tokenizer.encode(text, { add_special_tokens: true }).ids;
  const ids_plain = tokenizer.encode(text, { add_special_tokens: false }).ids;
  return {
    ids,
    ids_plain,
    decoded: decode(ids, false),
    decoded_skip: decode(ids, true),
    decoded_plain: decode(ids_plain, false),
  };
});
process.stdout.write(JSON.stringify({ vocab, results }));
