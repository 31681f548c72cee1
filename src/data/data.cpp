#include "switchyard/data.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "switchyard/error.h"
#include "switchyard/file_util.h"

namespace switchyard {

// .bin headers and tokens are little-endian on disk and are copied straight into host values.
static_assert(std::endian::native == std::endian::little, ".bin shard I/O assumes little-endian");

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr const char* kCorpusFormat = "switchyard-byte-corpus";
constexpr int64_t kCorpusVersion = 1;
constexpr size_t kMaxDomains = 256;               // domain labels are uint8
__extension__ typedef unsigned __int128 uint128;  // exact products of two 64-bit values

// ---- manifest helpers: every error names the manifest and the dotted field ---------------------

const json& require(const json& object, const std::string& key, const std::string& where,
                    const std::string& source) {
  const auto it = object.find(key);
  if (it == object.end()) fail("{}: missing field '{}'", source, where);
  return *it;
}

uint64_t require_unsigned(const json& value, const std::string& where, const std::string& source) {
  if (!value.is_number_unsigned()) {
    fail("{}: field '{}' must be a non-negative integer, got {}", source, where, value.dump());
  }
  return value.get<uint64_t>();
}

std::string require_string(const json& value, const std::string& where, const std::string& source) {
  if (!value.is_string())
    fail("{}: field '{}' must be a string, got {}", source, where, value.dump());
  return value.get<std::string>();
}

// A split file must sit inside the corpus folder: a plain name, no path.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

bool hex_digest(const std::string& text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Checks that `documents` tile [0, size) in order with domains below num_domains; `where` names
// the table and `size_where` the size field in error messages.
void check_documents(const std::vector<Document>& documents, int64_t size, size_t num_domains,
                     const std::string& source, const std::string& where,
                     const std::string& size_where) {
  int64_t end = 0;
  for (size_t i = 0; i < documents.size(); ++i) {
    const Document& d = documents[i];
    const std::string field = fmt::format("{}[{}]", where, i);
    if (d.domain < 0 || static_cast<size_t>(d.domain) >= num_domains) {
      fail("{}: field '{}': domain index {} out of range ({} domains)", source, field, d.domain,
           num_domains);
    }
    if (d.offset > size || d.length > size - d.offset) {
      fail(
          "{}: field '{}': document [offset {}, length {}] extends past the end of the data ({} "
          "bytes by field '{}')",
          source, field, d.offset, d.length, size, size_where);
    }
    if (d.offset < end) {
      fail(
          "{}: field '{}': document at offset {} overlaps or precedes the previous one, which "
          "ends at {} (documents must be sorted and disjoint)",
          source, field, d.offset, end);
    }
    if (d.offset > end) {
      fail(
          "{}: field '{}': gap before the document at offset {}: the previous one ends at {} "
          "(documents must cover the data)",
          source, field, d.offset, end);
    }
    end = d.offset + d.length;
  }
  if (end != size) {
    fail(
        "{}: field '{}': documents cover {} of the {} bytes given by field '{}' (documents must "
        "cover the data)",
        source, where, end, size, size_where);
  }
}

}  // namespace

// ---- byte corpus
// ---------------------------------------------------------------------------------

ByteCorpus load_byte_corpus(const std::string& dir, const std::string& split) {
  const std::string source = (fs::path(dir) / "manifest.json").string();
  if (!fs::is_regular_file(source)) {
    fail("corpus '{}': missing file '{}' (build the default corpus with scripts/build-corpus.sh)",
         dir, source);
  }
  json manifest;
  try {
    manifest = json::parse(read_file_text(source));
  } catch (const json::exception& e) {
    fail("{}: bad JSON: {}", source, e.what());
  }
  if (!manifest.is_object()) fail("{}: the manifest must be a JSON object", source);

  const std::string format =
      require_string(require(manifest, "format", "format", source), "format", source);
  if (format != kCorpusFormat) {
    fail("{}: field 'format' is '{}', expected '{}'", source, format, kCorpusFormat);
  }
  const json& version_field = require(manifest, "version", "version", source);
  if (!version_field.is_number_integer() || version_field.get<int64_t>() != kCorpusVersion) {
    fail("{}: field 'version' is {}, only version {} is supported", source, version_field.dump(),
         kCorpusVersion);
  }
  if (const auto it = manifest.find("vocab_size"); it != manifest.end()) {
    if (!it->is_number_integer() || it->get<int64_t>() != kByteVocabSize) {
      fail("{}: field 'vocab_size' is {}, a byte corpus has {}", source, it->dump(),
           kByteVocabSize);
    }
  }

  ByteCorpus corpus;
  const json& domains = require(manifest, "domains", "domains", source);
  if (!domains.is_array() || domains.empty() || domains.size() > kMaxDomains) {
    fail("{}: field 'domains' must be an array of 1 to {} names, got {}", source, kMaxDomains,
         domains.is_array() ? fmt::format("{} entries", domains.size()) : domains.dump());
  }
  for (size_t i = 0; i < domains.size(); ++i) {
    corpus.domain_names.push_back(
        require_string(domains[i], fmt::format("domains[{}]", i), source));
  }

  const json& splits = require(manifest, "splits", "splits", source);
  if (!splits.is_object()) fail("{}: field 'splits' must be an object", source);
  if (!splits.contains(split)) {
    std::string available;
    for (const auto& [name, _] : splits.items())
      available += (available.empty() ? "" : ", ") + name;
    fail("{}: missing field 'splits.{}': no split '{}' (available: {})", source, split, split,
         available.empty() ? "none" : available);
  }
  const std::string at = "splits." + split;
  const json& entry = splits.at(split);
  if (!entry.is_object()) fail("{}: field '{}' must be an object", source, at);

  const std::string file =
      require_string(require(entry, "file", at + ".file", source), at + ".file", source);
  if (!plain_file_name(file)) {
    fail("{}: field '{}.file' must name a file inside the corpus folder, got '{}'", source, at,
         file);
  }
  const uint64_t size =
      require_unsigned(require(entry, "size", at + ".size", source), at + ".size", source);
  std::string digest =
      require_string(require(entry, "sha256", at + ".sha256", source), at + ".sha256", source);
  std::transform(digest.begin(), digest.end(), digest.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!hex_digest(digest)) {
    fail("{}: field '{}.sha256' must be 64 hex digits, got '{}'", source, at, digest);
  }
  if (size > static_cast<uint64_t>(INT64_MAX)) fail("{}: field '{}.size' is too large", source, at);

  const std::string docs_at = at + ".documents";
  const json& documents = require(entry, "documents", docs_at, source);
  if (!documents.is_array()) fail("{}: field '{}' must be an array", source, docs_at);
  corpus.documents.reserve(documents.size());
  for (size_t i = 0; i < documents.size(); ++i) {
    const json& row = documents[i];
    const std::string where = fmt::format("{}[{}]", docs_at, i);
    if (!row.is_array() || row.size() != 3) {
      fail("{}: field '{}' must be [offset, length, domain_index], got {}", source, where,
           row.dump());
    }
    Document d;
    const uint64_t offset = require_unsigned(row[0], where + "[0]", source);
    const uint64_t length = require_unsigned(row[1], where + "[1]", source);
    const uint64_t domain = require_unsigned(row[2], where + "[2]", source);
    // Clamp before narrowing; check_documents then reports the value as out of range.
    d.offset = static_cast<int64_t>(std::min<uint64_t>(offset, INT64_MAX));
    d.length = static_cast<int64_t>(std::min<uint64_t>(length, INT64_MAX));
    d.domain = static_cast<int>(std::min<uint64_t>(domain, INT32_MAX));
    corpus.documents.push_back(d);
  }
  // Checks the table before touching the (possibly large) split file.
  check_documents(corpus.documents, static_cast<int64_t>(size), corpus.domain_names.size(), source,
                  docs_at, at + ".size");

  corpus.split = split;
  corpus.path = (fs::path(dir) / file).string();
  corpus.sha256 = digest;
  if (!fs::is_regular_file(corpus.path)) {
    fail("corpus '{}': missing file '{}' (named by field '{}.file' of {})", dir, corpus.path, at,
         source);
  }
  // The size first, so a wrong manifest cannot make us read (or allocate for) a huge file.
  std::error_code ec;
  const uintmax_t on_disk = fs::file_size(corpus.path, ec);
  if (!ec && on_disk != size) {
    fail("{}: size is {} bytes but field '{}.size' of {} says {}", corpus.path, on_disk, at, source,
         size);
  }
  const std::vector<uint8_t> bytes = read_file_bytes(corpus.path);
  if (bytes.size() != size) {
    fail("{}: size is {} bytes but field '{}.size' of {} says {}", corpus.path, bytes.size(), at,
         source, size);
  }
  const std::string actual = sha256_hex(bytes);
  if (actual != digest) {
    fail("{}: checksum mismatch: sha256 is {} but field '{}.sha256' of {} says {}", corpus.path,
         actual, at, source, digest);
  }
  corpus.tokens.assign(bytes.begin(), bytes.end());
  corpus.domains.resize(bytes.size());
  for (const Document& d : corpus.documents) {
    std::fill_n(corpus.domains.begin() + d.offset, d.length, static_cast<uint8_t>(d.domain));
  }
  corpus.vocab_size = kByteVocabSize;
  return corpus;
}

void write_byte_corpus(
    const std::string& dir, const std::vector<std::string>& domain_names,
    const std::vector<std::pair<std::string, std::vector<CorpusDocument>>>& splits) {
  if (domain_names.empty() || domain_names.size() > kMaxDomains) {
    fail("write_byte_corpus '{}': need 1 to {} domains, got {}", dir, kMaxDomains,
         domain_names.size());
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("write_byte_corpus: cannot create folder '{}': {}", dir, ec.message());

  json manifest = {{"format", kCorpusFormat},
                   {"version", kCorpusVersion},
                   {"vocab_size", kByteVocabSize},
                   {"domains", domain_names},
                   {"splits", json::object()}};
  for (const auto& [split, documents] : splits) {
    if (!plain_file_name(split)) fail("write_byte_corpus '{}': bad split name '{}'", dir, split);
    std::string bytes;
    json table = json::array();
    for (const CorpusDocument& d : documents) {
      if (d.domain < 0 || static_cast<size_t>(d.domain) >= domain_names.size()) {
        fail("write_byte_corpus '{}': split '{}': domain index {} out of range ({} domains)", dir,
             split, d.domain, domain_names.size());
      }
      table.push_back({bytes.size(), d.text.size(), d.domain});
      bytes += d.text;
    }
    const std::string file = split + ".bytes";
    write_file_atomic((fs::path(dir) / file).string(), bytes);
    const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
    manifest["splits"][split] = {{"file", file},
                                 {"size", bytes.size()},
                                 {"sha256", sha256_hex({data, bytes.size()})},
                                 {"documents", std::move(table)}};
  }
  // The manifest goes last so a reader never sees it ahead of the files it describes.
  write_file_atomic((fs::path(dir) / "manifest.json").string(), manifest.dump(2) + "\n");
}

// ---- text files
// ------------------------------------------------------------------------------------

TokenData load_text_files(const std::vector<std::string>& paths) {
  if (paths.empty()) fail("load_text_files: no files given");
  if (paths.size() > kMaxDomains) {
    fail("load_text_files: {} files given, at most {} (one domain per file)", paths.size(),
         kMaxDomains);
  }
  TokenData data;
  for (size_t i = 0; i < paths.size(); ++i) {
    const std::vector<uint8_t> bytes = read_file_bytes(paths[i]);
    data.documents.push_back(
        {data.size(), static_cast<int64_t>(bytes.size()), static_cast<int>(i)});
    data.tokens.insert(data.tokens.end(), bytes.begin(), bytes.end());
    data.domains.insert(data.domains.end(), bytes.size(), static_cast<uint8_t>(i));
    data.domain_names.push_back(fs::path(paths[i]).filename().string());
  }
  if (data.tokens.empty()) fail("load_text_files: the {} files hold no bytes", paths.size());
  data.vocab_size = kByteVocabSize;
  return data;
}

namespace {

// Appends tokens [offset, offset + length) of `from` to `part` as one document.
void append_document(TokenData& part, const TokenData& from, int64_t offset, int64_t length,
                     int domain) {
  part.documents.push_back({part.size(), length, domain});
  part.tokens.insert(part.tokens.end(), from.tokens.begin() + offset,
                     from.tokens.begin() + offset + length);
  part.domains.insert(part.domains.end(), from.domains.begin() + offset,
                      from.domains.begin() + offset + length);
}

}  // namespace

TokenData select_domains(const TokenData& data, const std::vector<std::string>& names,
                         const std::string& source) {
  std::vector<bool> keep(data.domain_names.size(), false);
  for (const std::string& name : names) {
    const auto it = std::find(data.domain_names.begin(), data.domain_names.end(), name);
    if (it == data.domain_names.end())
      fail("{}: field 'domains' names '{}', which is not a domain of the data (it has: {})", source,
           name, fmt::join(data.domain_names, ", "));
    keep[size_t(it - data.domain_names.begin())] = true;
  }
  TokenData out;
  out.domain_names = data.domain_names;
  out.vocab_size = data.vocab_size;
  for (const Document& d : data.documents)
    if (d.domain >= 0 && size_t(d.domain) < keep.size() && keep[size_t(d.domain)])
      append_document(out, data, d.offset, d.length, d.domain);
  if (out.tokens.empty())
    fail("{}: field 'domains' ({}) keeps no token of the data", source, fmt::join(names, ", "));
  return out;
}

TokenData split_validation(TokenData& data, double fraction) {
  if (!(fraction > 0.0 && fraction < 1.0)) {
    fail("split_validation: fraction must be in (0, 1), got {}", fraction);
  }
  if (data.tokens.size() != data.domains.size()) {
    fail("split_validation: {} tokens but {} domain labels", data.tokens.size(),
         data.domains.size());
  }
  TokenData train, val;
  for (TokenData* part : {&train, &val}) {
    part->domain_names = data.domain_names;
    part->vocab_size = data.vocab_size;
  }
  auto append = [&](TokenData& part, int64_t offset, int64_t length, int domain) {
    append_document(part, data, offset, length, domain);
  };
  for (const Document& d : data.documents) {
    if (d.offset < 0 || d.length < 0 || d.offset + d.length > data.size()) {
      fail("split_validation: document [offset {}, length {}] lies outside the {} tokens", d.offset,
           d.length, data.size());
    }
    const auto held_out =
        static_cast<int64_t>(std::floor(static_cast<double>(d.length) * fraction));
    append(train, d.offset, d.length - held_out, d.domain);
    append(val, d.offset + d.length - held_out, held_out, d.domain);
  }
  data = std::move(train);
  return val;
}

// ---- .bin shards
// -----------------------------------------------------------------------------------

TokenData load_bin_shard(const std::string& path, int vocab_size) {
  if (vocab_size < 0 || vocab_size > 65536) {
    fail("{}: vocabulary size {} is outside [0, 65536] (0 = max token + 1)", path, vocab_size);
  }
  const std::vector<uint8_t> bytes = read_file_bytes(path);
  constexpr size_t kHeaderBytes = kBinShardHeaderInts * sizeof(int32_t);
  if (bytes.size() < kHeaderBytes) {
    fail("{}: file too short for a .bin shard: {} bytes, the header alone is {}", path,
         bytes.size(), kHeaderBytes);
  }
  int32_t header[3];
  std::memcpy(header, bytes.data(), sizeof(header));
  if (header[0] != kBinShardMagic) {
    fail("{}: wrong magic number {} in header[0], expected {} (an llm.c .bin shard)", path,
         header[0], kBinShardMagic);
  }
  if (header[1] != kBinShardVersion) {
    fail("{}: unsupported version {} in header[1]; only version {} (uint16 tokens) is supported",
         path, header[1], kBinShardVersion);
  }
  const size_t payload = bytes.size() - kHeaderBytes;
  if (header[2] < 0 || payload != static_cast<size_t>(header[2]) * sizeof(uint16_t)) {
    fail("{}: header[2] says {} tokens but the file holds {} bytes after the header ({} tokens)",
         path, header[2], payload, payload / sizeof(uint16_t));
  }
  if (header[2] == 0) fail("{}: the shard holds no tokens (header[2] is 0)", path);

  TokenData data;
  data.tokens.resize(static_cast<size_t>(header[2]));
  std::memcpy(data.tokens.data(), bytes.data() + kHeaderBytes, payload);
  const auto max_it = std::max_element(data.tokens.begin(), data.tokens.end());
  if (vocab_size == 0) {
    data.vocab_size = *max_it + 1;
  } else {
    if (*max_it >= vocab_size) {
      fail("{}: token {} at position {} is outside the vocabulary of {}", path, *max_it,
           max_it - data.tokens.begin(), vocab_size);
    }
    data.vocab_size = vocab_size;
  }
  data.domains.assign(data.tokens.size(), 0);
  data.domain_names = {fs::path(path).filename().string()};
  data.documents = {{0, data.size(), 0}};
  return data;
}

void write_bin_shard(const std::string& path, std::span<const uint16_t> tokens) {
  if (tokens.size() > static_cast<size_t>(INT32_MAX)) {
    fail("{}: {} tokens do not fit a .bin header (int32 count)", path, tokens.size());
  }
  constexpr size_t kHeaderBytes = kBinShardHeaderInts * sizeof(int32_t);
  std::vector<uint8_t> bytes(kHeaderBytes + tokens.size() * sizeof(uint16_t), 0);
  const int32_t header[3] = {kBinShardMagic, kBinShardVersion, static_cast<int32_t>(tokens.size())};
  std::memcpy(bytes.data(), header, sizeof(header));
  if (!tokens.empty()) {
    std::memcpy(bytes.data() + kHeaderBytes, tokens.data(), tokens.size() * sizeof(uint16_t));
  }
  write_file_atomic(path, bytes);
}

// ---- sampler
// -----------------------------------------------------------------------------------------

BatchSampler::BatchSampler(const TokenData& data, int64_t batch, int64_t seq_len, uint64_t seed)
    : data_(&data), batch_(batch), seq_len_(seq_len), seed_(seed) {
  if (batch < 1) fail("BatchSampler: batch size must be at least 1, got {}", batch);
  if (seq_len < 1) fail("BatchSampler: sequence length must be at least 1, got {}", seq_len);
  if (data.tokens.size() != data.domains.size()) {
    fail("BatchSampler: {} tokens but {} domain labels", data.tokens.size(), data.domains.size());
  }
  if (data.size() < seq_len + 1) {
    fail("BatchSampler: a window needs T + 1 = {} tokens but the data holds {}", seq_len + 1,
         data.size());
  }
}

Batch BatchSampler::next() {
  return batch_at(step_++);
}

void BatchSampler::skip_to(int64_t step) {
  if (step < 0) fail("BatchSampler: cannot skip to step {}", step);
  step_ = step;
}

Batch BatchSampler::batch_at(int64_t step) const {
  if (step < 0) fail("BatchSampler: no batch at step {}", step);
  // std::seed_seq and mt19937_64 are fully specified by the standard, so batches agree across
  // compilers; each step seeds afresh, which makes skip_to O(1).
  const auto s = static_cast<uint64_t>(step);
  std::seed_seq seq{uint32_t(seed_), uint32_t(seed_ >> 32), uint32_t(s), uint32_t(s >> 32)};
  std::mt19937_64 rng(seq);
  // Modulo rather than std::uniform_int_distribution, whose output differs between standard
  // libraries; its bias (range / 2^64) is negligible.
  const auto range = static_cast<uint64_t>(data_->size() - seq_len_);  // valid start offsets
  std::vector<int64_t> offsets(static_cast<size_t>(batch_));
  for (int64_t& o : offsets) o = static_cast<int64_t>(rng() % range);
  return gather(std::move(offsets));
}

Batch BatchSampler::eval_batch(int64_t index, int64_t num_batches) const {
  if (num_batches < 1 || index < 0 || index >= num_batches) {
    fail("BatchSampler: evaluation batch {} of {} does not exist", index, num_batches);
  }
  const int64_t windows = num_batches * batch_;
  const int64_t last = data_->size() - seq_len_ - 1;  // last valid start offset
  std::vector<int64_t> offsets(static_cast<size_t>(batch_));
  for (int64_t b = 0; b < batch_; ++b) {
    const int64_t w = index * batch_ + b;
    // w * last can exceed 64 bits for huge data.
    offsets[b] = windows == 1
                     ? 0
                     : static_cast<int64_t>(uint128(w) * uint64_t(last) / uint64_t(windows - 1));
  }
  return gather(std::move(offsets));
}

Batch BatchSampler::gather(std::vector<int64_t> offsets) const {
  const int64_t width = seq_len_ + 1;
  Batch out;
  out.batch = batch_;
  out.seq_len = seq_len_;
  out.tokens.resize(static_cast<size_t>(batch_ * width));
  out.domains.resize(static_cast<size_t>(batch_ * width));
  for (int64_t b = 0; b < batch_; ++b) {
    const int64_t o = offsets[b];
    std::copy_n(data_->tokens.begin() + o, width, out.tokens.begin() + b * width);
    std::copy_n(data_->domains.begin() + o, width, out.domains.begin() + b * width);
  }
  out.offsets = std::move(offsets);
  return out;
}

}  // namespace switchyard
