// Training data: the byte corpus built by scripts/build-corpus.sh, users' text files, llm.c-style
// .bin token shards, and the sampler that cuts (B, T+1) windows out of them.
//
// Every loader returns TokenData: one token stream with a domain label per token and a document
// table that tiles the stream. Loaders check their input and throw switchyard::Error naming the
// file and the field at fault.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace switchyard {

constexpr int kByteVocabSize = 256;
// llm.c's data file header: 256 int32 = {magic, version, token count, 0...}, then uint16 tokens.
constexpr int32_t kBinShardMagic = 20240520;
constexpr int32_t kBinShardVersion = 1;
constexpr int64_t kBinShardHeaderInts = 256;

// A contiguous run of tokens [offset, offset + length) from one source, with one domain.
struct Document {
  int64_t offset = 0;
  int64_t length = 0;
  int domain = 0;
};

struct TokenData {
  std::vector<uint16_t> tokens;           // (N,) ids < vocab_size
  std::vector<uint8_t> domains;           // (N,) index into domain_names
  std::vector<std::string> domain_names;  // at most 256
  std::vector<Document> documents;        // sorted, contiguous, covering [0, N)
  int vocab_size = kByteVocabSize;

  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
};

// One split of a corpus directory: manifest.json plus the split's byte file.
struct ByteCorpus : TokenData {
  std::string split;   // "train", "val", ...
  std::string path;    // the split's byte file
  std::string sha256;  // its checksum as the manifest gives it (verified)
};

// Loads split `split` of the corpus in `dir` (tokens are bytes, vocabulary 256). Verifies the
// manifest's format and version, the file's size and sha256, and the document table (offsets
// inside the file, sorted, contiguous, non-overlapping, domain indices in range).
ByteCorpus load_byte_corpus(const std::string& dir, const std::string& split);

// Writes a corpus directory in the same format as scripts/build-corpus.sh (used by tests and the
// synthetic data generator): for each split, the documents' bytes concatenated. Atomic per file.
struct CorpusDocument {
  std::string text;
  int domain = 0;
};
void write_byte_corpus(
    const std::string& dir, const std::vector<std::string>& domain_names,
    const std::vector<std::pair<std::string, std::vector<CorpusDocument>>>& splits);

// Users' own text files as bytes: one document per file, domain = file index, domain name = the
// file's name. At most 256 files; empty files are allowed, no bytes at all is an error.
TokenData load_text_files(const std::vector<std::string>& paths);

// Moves the last `fraction` (0 < fraction < 1) of every document of `data` into the returned
// validation set, keeping the domains; `data` keeps the rest. A document's share is rounded down,
// so very short documents contribute nothing to validation.
TokenData split_validation(TokenData& data, double fraction);

// The documents of `data` whose domain is one of `names`, re-packed (the domain indices and names
// are kept, so domain statistics stay comparable). An unknown name, or no token left, is an error
// naming `source` and the domains there are.
TokenData select_domains(const TokenData& data, const std::vector<std::string>& names,
                         const std::string& source);

// An llm.c / nanoGPT-style .bin shard; the whole shard is one document of domain 0 named after the
// file. `vocab_size` 0 means max token + 1; otherwise every token must be below it.
TokenData load_bin_shard(const std::string& path, int vocab_size = 0);
// Atomic (temporary file, then rename).
void write_bin_shard(const std::string& path, std::span<const uint16_t> tokens);

// SHA-256 of `bytes` as 64 lower-case hex digits.
std::string sha256_hex(std::span<const uint8_t> bytes);

// Windows of T+1 consecutive tokens: inputs are [0, T), targets [1, T+1).
struct Batch {
  int64_t batch = 0;             // B
  int64_t seq_len = 0;           // T
  std::vector<int64_t> offsets;  // (B,) start of each window in the token stream
  std::vector<int32_t> tokens;   // (B, T+1)
  std::vector<uint8_t> domains;  // (B, T+1) domain of each token
};

// Cuts batches out of `data`, which must outlive the sampler.
//
// Training batches: batch `step` takes B offsets uniform in [0, N - T - 1] from a std::mt19937_64
// seeded from (seed, step) alone, so any step's batch is reproducible without replaying the
// earlier ones: a resumed run calls skip_to(step) and draws what the uninterrupted run drew.
// Evaluation batches: fixed, evenly spaced offsets, the same on every call.
class BatchSampler {
 public:
  BatchSampler(const TokenData& data, int64_t batch, int64_t seq_len, uint64_t seed);

  Batch next();  // the batch of step(), then advances
  Batch batch_at(int64_t step) const;
  void skip_to(int64_t step);
  int64_t step() const { return step_; }

  // Batch `index` of `num_batches` evaluation batches: their num_batches * B windows start at
  // offsets spread evenly over [0, N - T - 1], first and last included.
  Batch eval_batch(int64_t index, int64_t num_batches) const;

  int64_t batch() const { return batch_; }
  int64_t seq_len() const { return seq_len_; }

 private:
  Batch gather(std::vector<int64_t> offsets) const;

  const TokenData* data_;
  int64_t batch_;
  int64_t seq_len_;
  uint64_t seed_;
  int64_t step_ = 0;
};

}  // namespace switchyard
