// Data pipeline: SHA-256, the byte corpus manifest (every malformed field names itself), .bin
// shard headers, users' text files and their validation split, and the batch sampler (domain
// labels, determinism, resuming). Corpora are small and written by the tests into a temp folder.
// With SWITCHYARD_CORPUS_DIR set, the corpus built by scripts/build-corpus.sh is checked too.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <switchyard/data.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace switchyard {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Runs `f` and returns the message of the Error it throws (fails the test if it throws none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected switchyard::Error";
  return "";
}

std::span<const uint8_t> as_bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "switchyard_data_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

// ---- SHA-256 -----------------------------------------------------------------------------------

TEST(Sha256, KnownVectors) {
  EXPECT_EQ(sha256_hex(as_bytes("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex(as_bytes("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(as_bytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(as_bytes(std::string(1000000, 'a'))),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PaddingBoundaries) {
  // Lengths around the one-or-two padding blocks decision (55/56) and block ends (63/64, 119/120).
  const std::pair<size_t, const char*> cases[] = {
      {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
      {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
      {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
      {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
      {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
      {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"}};
  for (const auto& [n, digest] : cases)
    EXPECT_EQ(sha256_hex(as_bytes(std::string(n, 'a'))), digest) << n;
  std::vector<uint8_t> all;
  for (int r = 0; r < 3; ++r) {
    for (int b = 0; b < 256; ++b) all.push_back(static_cast<uint8_t>(b));
  }
  EXPECT_EQ(sha256_hex(all), "f3a25aa93aa2fbba28d79260535bbd6a5eb0fc1c24a8b0f04e12b484c1dfe363");
}

// ---- byte corpus -------------------------------------------------------------------------------

const std::vector<std::string> kDomains = {"prose", "code", "dictionary"};

// Train: 5 documents over 3 domains (54 bytes); val: 2 documents.
std::vector<std::pair<std::string, std::vector<CorpusDocument>>> small_corpus() {
  return {{"train",
           {{"The quick brown fox.\n\n", 0},
            {"int main() { return 0; }\n\n", 1},
            {"fox (n.): a canine\n\n", 2},
            {"", 2},
            {"Jumps over the lazy dog.\n\n", 0}}},
          {"val", {{"void f();\n\n", 1}, {"dog (n.): a canine\n\n", 2}}}};
}

TEST(ByteCorpus, RoundTrip) {
  TempDir dir;
  const auto splits = small_corpus();
  write_byte_corpus(dir.str(), kDomains, splits);
  for (const auto& [name, docs] : splits) {
    const ByteCorpus c = load_byte_corpus(dir.str(), name);
    EXPECT_EQ(c.split, name);
    EXPECT_EQ(c.domain_names, kDomains);
    EXPECT_EQ(c.vocab_size, 256);
    ASSERT_EQ(c.documents.size(), docs.size());
    std::string text;
    std::vector<uint8_t> domains;
    for (size_t i = 0; i < docs.size(); ++i) {
      EXPECT_EQ(c.documents[i].offset, static_cast<int64_t>(text.size()));
      EXPECT_EQ(c.documents[i].length, static_cast<int64_t>(docs[i].text.size()));
      EXPECT_EQ(c.documents[i].domain, docs[i].domain);
      text += docs[i].text;
      domains.insert(domains.end(), docs[i].text.size(), static_cast<uint8_t>(docs[i].domain));
    }
    EXPECT_EQ(c.tokens, std::vector<uint16_t>(text.begin(), text.end()));
    EXPECT_EQ(c.domains, domains);
    EXPECT_EQ(c.sha256, sha256_hex(as_bytes(text)));
    EXPECT_EQ(read_file_text(c.path), text);
  }
}

// Writes the small corpus, lets `mutate` change the manifest and the files, and returns the
// Error message of loading `split`.
std::string corrupt(const std::function<void(json&, const TempDir&)>& mutate,
                    const std::string& split = "train") {
  TempDir dir;
  write_byte_corpus(dir.str(), kDomains, small_corpus());
  json manifest = json::parse(read_file_text(dir / "manifest.json"));
  mutate(manifest, dir);
  if (!manifest.is_null()) write_file_atomic(dir / "manifest.json", manifest.dump());
  return error_of([&] { load_byte_corpus(dir.str(), split); });
}

json& docs(json& m) {
  return m["splits"]["train"]["documents"];
}

TEST(ByteCorpus, MissingFiles) {
  TempDir dir;
  EXPECT_THAT(
      error_of([&] { load_byte_corpus(dir.str(), "train"); }),
      AllOf(HasSubstr("missing file"), HasSubstr("manifest.json"), HasSubstr("build-corpus.sh")));
  EXPECT_THAT(
      corrupt([](json&, const TempDir& d) { fs::remove(d / "train.bytes"); }),
      AllOf(HasSubstr("missing file"), HasSubstr("train.bytes"), HasSubstr("splits.train.file")));
  EXPECT_THAT(corrupt([](json&, const TempDir&) {}, "test"),
              AllOf(HasSubstr("splits.test"), HasSubstr("train, val")));
}

TEST(ByteCorpus, ChecksumAndSize) {
  // One byte changed: same size, different checksum.
  EXPECT_THAT(corrupt([](json&, const TempDir& d) {
                std::string text = read_file_text(d / "train.bytes");
                text[3] ^= 1;
                write_file_atomic(d / "train.bytes", text);
              }),
              AllOf(HasSubstr("train.bytes"), HasSubstr("checksum mismatch"),
                    HasSubstr("splits.train.sha256")));
  EXPECT_THAT(corrupt([](json&, const TempDir& d) {
                write_file_atomic(d / "train.bytes", read_file_text(d / "train.bytes") + "x");
              }),
              AllOf(HasSubstr("train.bytes"), HasSubstr("splits.train.size")));
  // Upper-case digests are the same digest.
  TempDir dir;
  write_byte_corpus(dir.str(), kDomains, small_corpus());
  json m = json::parse(read_file_text(dir / "manifest.json"));
  std::string digest = m["splits"]["train"]["sha256"];
  std::transform(digest.begin(), digest.end(), digest.begin(), ::toupper);
  m["splits"]["train"]["sha256"] = digest;
  write_file_atomic(dir / "manifest.json", m.dump());
  EXPECT_NO_THROW(load_byte_corpus(dir.str(), "train"));
}

TEST(ByteCorpus, MalformedManifestNamesTheField) {
  struct Case {
    const char* what;
    std::function<void(json&, const TempDir&)> mutate;
    std::vector<std::string> expect;  // substrings of the message
  };
  const std::vector<Case> cases = {
      {"bad JSON",
       [](json& m, const TempDir& d) {
         write_file_atomic(d / "manifest.json", m.dump().substr(0, 40));
         m = nullptr;
       },
       {"manifest.json", "bad JSON"}},
      {"not an object",
       [](json& m, const TempDir&) {
         m = json::array({1, 2});
       },
       {"JSON object"}},
      {"no format", [](json& m, const TempDir&) { m.erase("format"); }, {"'format'"}},
      {"wrong format", [](json& m, const TempDir&) { m["format"] = "gpt"; }, {"'format'", "gpt"}},
      {"no version", [](json& m, const TempDir&) { m.erase("version"); }, {"'version'"}},
      {"version 2", [](json& m, const TempDir&) { m["version"] = 2; }, {"'version'", "2"}},
      {"vocab 50257", [](json& m, const TempDir&) { m["vocab_size"] = 50257; }, {"'vocab_size'"}},
      {"no domains", [](json& m, const TempDir&) { m.erase("domains"); }, {"'domains'"}},
      {"empty domains",
       [](json& m, const TempDir&) { m["domains"] = json::array(); },
       {"'domains'"}},
      {"domain not a string",
       [](json& m, const TempDir&) { m["domains"][1] = 7; },
       {"'domains[1]'"}},
      {"no splits", [](json& m, const TempDir&) { m.erase("splits"); }, {"'splits'"}},
      {"split not an object",
       [](json& m, const TempDir&) { m["splits"]["train"] = 3; },
       {"'splits.train'"}},
      {"no file",
       [](json& m, const TempDir&) { m["splits"]["train"].erase("file"); },
       {"'splits.train.file'"}},
      {"file outside",
       [](json& m, const TempDir&) { m["splits"]["train"]["file"] = "../x"; },
       {"'splits.train.file'", "../x"}},
      {"no size",
       [](json& m, const TempDir&) { m["splits"]["train"].erase("size"); },
       {"'splits.train.size'"}},
      {"negative size",
       [](json& m, const TempDir&) { m["splits"]["train"]["size"] = -5; },
       {"'splits.train.size'", "non-negative"}},
      {"size a string",
       [](json& m, const TempDir&) { m["splits"]["train"]["size"] = "54"; },
       {"'splits.train.size'"}},
      {"no sha256",
       [](json& m, const TempDir&) { m["splits"]["train"].erase("sha256"); },
       {"'splits.train.sha256'"}},
      {"sha256 not hex",
       [](json& m, const TempDir&) { m["splits"]["train"]["sha256"] = "abc"; },
       {"'splits.train.sha256'", "64 hex"}},
      {"no documents",
       [](json& m, const TempDir&) { m["splits"]["train"].erase("documents"); },
       {"'splits.train.documents'"}},
      {"documents not an array",
       [](json& m, const TempDir&) { docs(m) = json::object(); },
       {"'splits.train.documents'"}},
      {"row of two",
       [](json& m, const TempDir&) {
         docs(m)[1] = json::array({26, 26});
       },
       {"'splits.train.documents[1]'", "[offset, length, domain_index]"}},
      {"negative offset",
       [](json& m, const TempDir&) { docs(m)[1][0] = -1; },
       {"'splits.train.documents[1][0]'"}},
      {"fractional length",
       [](json& m, const TempDir&) { docs(m)[1][1] = 2.5; },
       {"'splits.train.documents[1][1]'"}},
      {"domain out of range",
       [](json& m, const TempDir&) { docs(m)[2][2] = 3; },
       {"'splits.train.documents[2]'", "domain index 3 out of range (3 domains)"}},
      {"past the end",
       [](json& m, const TempDir&) { docs(m)[4][1] = docs(m)[4][1].get<int>() + 1; },
       {"'splits.train.documents[4]'", "extends past the end"}},
      {"offset past the end",
       [](json& m, const TempDir&) { docs(m)[4][0] = 1000; },
       {"'splits.train.documents[4]'", "extends past the end"}},
      {"overlap",
       [](json& m, const TempDir&) { docs(m)[1][0] = docs(m)[1][0].get<int>() - 1; },
       {"'splits.train.documents[1]'", "overlaps"}},
      {"unsorted",
       [](json& m, const TempDir&) { std::swap(docs(m)[0], docs(m)[1]); },
       {"'splits.train.documents[0]'"}},
      {"gap",
       [](json& m, const TempDir&) { docs(m).erase(1); },
       {"'splits.train.documents[1]'", "gap"}},
      {"not covered",
       [](json& m, const TempDir&) { docs(m).erase(4); },
       {"'splits.train.documents'", "cover"}},
  };
  for (const Case& c : cases) {
    const std::string message = corrupt(c.mutate);
    for (const std::string& part : c.expect) {
      EXPECT_THAT(message, HasSubstr(part)) << c.what;
    }
    if (std::string(c.what) != "bad JSON") {
      EXPECT_THAT(message, HasSubstr("manifest.json")) << c.what;
    }
  }
}

// ---- .bin shards
// ---------------------------------------------------------------------------------

std::vector<uint8_t> shard_bytes(int32_t magic, int32_t version, int32_t count,
                                 const std::vector<uint16_t>& tokens) {
  std::vector<uint8_t> bytes(1024 + 2 * tokens.size(), 0);
  const int32_t header[3] = {magic, version, count};
  std::memcpy(bytes.data(), header, sizeof(header));
  if (!tokens.empty()) std::memcpy(bytes.data() + 1024, tokens.data(), 2 * tokens.size());
  return bytes;
}

TEST(BinShard, RoundTrip) {
  TempDir dir;
  const std::vector<uint16_t> tokens = {50256, 15496, 11, 995, 0, 65535, 7};
  write_bin_shard(dir / "shard.bin", tokens);
  const std::vector<uint8_t> bytes = read_file_bytes(dir / "shard.bin");
  ASSERT_EQ(bytes.size(), 1024 + 2 * tokens.size());
  EXPECT_EQ(bytes, shard_bytes(20240520, 1, 7, tokens));  // llm.c's layout exactly

  const TokenData data = load_bin_shard(dir / "shard.bin");
  EXPECT_EQ(data.tokens, tokens);
  EXPECT_EQ(data.vocab_size, 65536);  // max token + 1
  EXPECT_EQ(data.domains, std::vector<uint8_t>(tokens.size(), 0));
  EXPECT_EQ(data.domain_names, std::vector<std::string>{"shard.bin"});
  ASSERT_EQ(data.documents.size(), 1u);
  EXPECT_EQ(data.documents[0].length, 7);

  write_bin_shard(dir / "small.bin", std::vector<uint16_t>{3, 1, 4, 1, 5});
  EXPECT_EQ(load_bin_shard(dir / "small.bin").vocab_size, 6);
  EXPECT_EQ(load_bin_shard(dir / "small.bin", 50257).vocab_size, 50257);
  EXPECT_THAT(error_of([&] { load_bin_shard(dir / "small.bin", 5); }),
              AllOf(HasSubstr("small.bin"), HasSubstr("token 5 at position 4"),
                    HasSubstr("vocabulary of 5")));
}

TEST(BinShard, HeaderValidation) {
  TempDir dir;
  const std::string path = dir / "bad.bin";
  auto load_error = [&](const std::vector<uint8_t>& bytes) {
    write_file_atomic(path, bytes);
    return error_of([&] { load_bin_shard(path); });
  };
  EXPECT_THAT(load_error(std::vector<uint8_t>(100, 0)),
              AllOf(HasSubstr("bad.bin"), HasSubstr("too short"), HasSubstr("100 bytes")));
  EXPECT_THAT(
      load_error(shard_bytes(12345, 1, 2, {1, 2})),
      AllOf(HasSubstr("bad.bin"), HasSubstr("magic"), HasSubstr("12345"), HasSubstr("20240520")));
  EXPECT_THAT(load_error(shard_bytes(20240520, 2, 2, {1, 2})),
              AllOf(HasSubstr("bad.bin"), HasSubstr("unsupported version 2")));
  EXPECT_THAT(
      load_error(shard_bytes(20240520, 1, 3, {1, 2})),
      AllOf(HasSubstr("bad.bin"), HasSubstr("header[2] says 3 tokens"), HasSubstr("(2 tokens)")));
  EXPECT_THAT(load_error(shard_bytes(20240520, 1, -1, {1, 2})), HasSubstr("header[2]"));
  std::vector<uint8_t> odd = shard_bytes(20240520, 1, 2, {1, 2});
  odd.push_back(0);  // half a token
  EXPECT_THAT(load_error(odd), HasSubstr("header[2] says 2 tokens"));
  EXPECT_THAT(load_error(shard_bytes(20240520, 1, 0, {})), HasSubstr("no tokens"));
  EXPECT_THAT(error_of([&] { load_bin_shard(dir / "absent.bin"); }), HasSubstr("absent.bin"));
}

// ---- text files
// ------------------------------------------------------------------------------------

TEST(TextFiles, LoadAndSplit) {
  TempDir dir;
  const std::string a(100, 'a'), b = "0123456789012345678901234567890123456789", c;
  write_file_atomic(dir / "a.txt", a);
  write_file_atomic(dir / "b.md", b);
  write_file_atomic(dir / "empty.txt", c);
  TokenData data = load_text_files({dir / "a.txt", dir / "empty.txt", dir / "b.md"});
  EXPECT_EQ(data.domain_names, (std::vector<std::string>{"a.txt", "empty.txt", "b.md"}));
  ASSERT_EQ(data.size(), 140);
  EXPECT_EQ(std::count(data.domains.begin(), data.domains.end(), 0), 100);
  EXPECT_EQ(std::count(data.domains.begin(), data.domains.end(), 2), 40);
  EXPECT_EQ(data.tokens[100], '0');
  EXPECT_EQ(data.domains[100], 2);

  const TokenData val = split_validation(data, 0.25);
  // The last quarter of each file, rounded down: 25 + 0 + 10 bytes.
  ASSERT_EQ(val.size(), 35);
  ASSERT_EQ(data.size(), 105);
  EXPECT_EQ(val.domain_names, data.domain_names);
  EXPECT_EQ(std::string(val.tokens.begin() + 25, val.tokens.end()), b.substr(30));
  EXPECT_EQ(std::string(data.tokens.begin() + 75, data.tokens.end()), b.substr(0, 30));
  EXPECT_EQ(std::vector<uint8_t>(val.domains.begin() + 25, val.domains.end()),
            std::vector<uint8_t>(10, 2));
  ASSERT_EQ(val.documents.size(), 3u);
  EXPECT_EQ(val.documents[2].offset, 25);
  EXPECT_EQ(val.documents[2].length, 10);
  EXPECT_EQ(val.documents[2].domain, 2);
  EXPECT_EQ(data.documents[2].offset, 75);
  EXPECT_EQ(data.documents[2].length, 30);

  EXPECT_THAT(error_of([&] { split_validation(data, 1.0); }), HasSubstr("fraction"));
  EXPECT_THAT(error_of([&] { split_validation(data, 0.0); }), HasSubstr("fraction"));
  EXPECT_THAT(error_of([&] { load_text_files({dir / "missing.txt"}); }), HasSubstr("missing.txt"));
  EXPECT_THAT(error_of([&] { load_text_files({dir / "empty.txt"}); }), HasSubstr("no bytes"));
  EXPECT_THAT(error_of([&] { load_text_files({}); }), HasSubstr("no files"));
}

TEST(TextFiles, SelectDomainsKeepsTheirDocumentsOnly) {
  TempDir dir;
  write_file_atomic(dir / "a.txt", std::string(30, 'a'));
  write_file_atomic(dir / "b.txt", std::string(20, 'b'));
  write_file_atomic(dir / "c.txt", std::string(10, 'c'));
  const TokenData data = load_text_files({dir / "a.txt", dir / "b.txt", dir / "c.txt"});
  const TokenData kept = select_domains(data, {"c.txt", "a.txt"}, "train.json [data]");
  EXPECT_EQ(kept.domain_names, data.domain_names);  // indices keep their meaning
  ASSERT_EQ(kept.size(), 40);
  EXPECT_EQ(std::string(kept.tokens.begin(), kept.tokens.end()),
            std::string(30, 'a') + std::string(10, 'c'));
  ASSERT_EQ(kept.documents.size(), 2u);
  EXPECT_EQ(kept.documents[1].offset, 30);
  EXPECT_EQ(kept.documents[1].domain, 2);
  EXPECT_EQ(std::count(kept.domains.begin(), kept.domains.end(), 2), 10);
  EXPECT_EQ(std::count(kept.domains.begin(), kept.domains.end(), 1), 0);
  const std::string unknown =
      error_of([&] { select_domains(data, {"d.txt"}, "train.json [data]"); });
  EXPECT_THAT(unknown, HasSubstr("train.json [data]"));
  EXPECT_THAT(unknown, HasSubstr("'d.txt'"));
  EXPECT_THAT(unknown, HasSubstr("a.txt, b.txt, c.txt"));
  write_file_atomic(dir / "empty.txt", "");
  const TokenData with_empty = load_text_files({dir / "a.txt", dir / "empty.txt"});
  EXPECT_THAT(error_of([&] { select_domains(with_empty, {"empty.txt"}, "t"); }),
              HasSubstr("keeps no token"));
}

// ---- sampler
// ---------------------------------------------------------------------------------------

// 40 documents of varied lengths over 4 domains, each byte unique enough to locate windows.
TokenData labelled_data() {
  std::vector<CorpusDocument> documents;
  for (int i = 0; i < 40; ++i) {
    std::string text;
    for (int j = 0; j < 5 + (i * 7) % 23; ++j) text += static_cast<char>('a' + (i + j) % 26);
    documents.push_back({text, (i * 3) % 4});
  }
  TempDir dir;
  write_byte_corpus(dir.str(), {"w", "x", "y", "z"}, {{"train", documents}});
  return load_byte_corpus(dir.str(), "train");
}

int domain_at(const TokenData& data, int64_t position) {
  const auto it = std::upper_bound(data.documents.begin(), data.documents.end(), position,
                                   [](int64_t p, const Document& d) { return p < d.offset; });
  return std::prev(it)->domain;
}

TEST(BatchSampler, WindowsCarryTheirDomains) {
  const TokenData data = labelled_data();
  const int64_t B = 4, T = 16;
  BatchSampler sampler(data, B, T, 1234);
  std::set<int> seen;
  for (int step = 0; step < 50; ++step) {
    const Batch batch = step % 2 ? sampler.next() : sampler.eval_batch(step % 5, 5);
    ASSERT_EQ(batch.tokens.size(), size_t(B * (T + 1)));
    ASSERT_EQ(batch.domains.size(), size_t(B * (T + 1)));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t o = batch.offsets[b];
      ASSERT_GE(o, 0);
      ASSERT_LE(o + T + 1, data.size());
      for (int64_t t = 0; t <= T; ++t) {
        EXPECT_EQ(batch.tokens[b * (T + 1) + t], data.tokens[o + t]);
        EXPECT_EQ(batch.domains[b * (T + 1) + t], domain_at(data, o + t));
        seen.insert(batch.domains[b * (T + 1) + t]);
      }
    }
  }
  EXPECT_EQ(seen.size(), 4u);
}

TEST(BatchSampler, SameSeedSameBatches) {
  const TokenData data = labelled_data();
  BatchSampler a(data, 3, 8, 42), b(data, 3, 8, 42), c(data, 3, 8, 43);
  bool differs = false;
  for (int step = 0; step < 20; ++step) {
    const Batch x = a.next(), y = b.next(), z = c.next();
    EXPECT_EQ(x.offsets, y.offsets);
    EXPECT_EQ(x.tokens, y.tokens);
    EXPECT_EQ(x.domains, y.domains);
    differs = differs || x.offsets != z.offsets;
  }
  EXPECT_TRUE(differs) << "seeds 42 and 43 drew identical batches";
  EXPECT_EQ(a.step(), 20);
}

TEST(BatchSampler, ResumedSamplerDrawsTheSameBatches) {
  const TokenData data = labelled_data();
  BatchSampler uninterrupted(data, 5, 12, 7);
  std::vector<Batch> expected;
  for (int step = 0; step < 30; ++step) expected.push_back(uninterrupted.next());

  BatchSampler resumed(data, 5, 12, 7);
  resumed.skip_to(17);
  for (int step = 17; step < 30; ++step) {
    const Batch got = resumed.next();
    EXPECT_EQ(got.offsets, expected[step].offsets) << step;
    EXPECT_EQ(got.tokens, expected[step].tokens) << step;
  }
  EXPECT_EQ(uninterrupted.batch_at(3).offsets, expected[3].offsets);
  EXPECT_THAT(error_of([&] { resumed.skip_to(-1); }), HasSubstr("step -1"));
}

TEST(BatchSampler, EvaluationWindowsAreFixedAndEvenlySpaced) {
  const TokenData data = labelled_data();
  const int64_t B = 3, T = 10, batches = 4;
  BatchSampler sampler(data, B, T, 0);
  std::vector<int64_t> offsets;
  for (int64_t i = 0; i < batches; ++i) {
    const Batch batch = sampler.eval_batch(i, batches);
    offsets.insert(offsets.end(), batch.offsets.begin(), batch.offsets.end());
    EXPECT_EQ(batch.offsets, sampler.eval_batch(i, batches).offsets);
  }
  sampler.next();  // training draws do not move evaluation windows
  EXPECT_EQ(sampler.eval_batch(0, batches).offsets,
            std::vector<int64_t>(offsets.begin(), offsets.begin() + B));
  const int64_t last = data.size() - T - 1;
  EXPECT_EQ(offsets.front(), 0);
  EXPECT_EQ(offsets.back(), last);
  for (size_t w = 1; w < offsets.size(); ++w) {
    const double gap = double(offsets[w] - offsets[w - 1]);
    EXPECT_NEAR(gap, double(last) / double(offsets.size() - 1), 1.0);
  }
  EXPECT_THAT(error_of([&] { sampler.eval_batch(4, 4); }), HasSubstr("4 of 4"));
}

TEST(BatchSampler, RejectsBadShapes) {
  const TokenData data = labelled_data();
  EXPECT_THAT(error_of([&] { BatchSampler(data, 0, 8, 1); }), HasSubstr("batch size"));
  EXPECT_THAT(error_of([&] { BatchSampler(data, 2, 0, 1); }), HasSubstr("sequence length"));
  EXPECT_THAT(error_of([&] { BatchSampler(data, 2, data.size(), 1); }),
              HasSubstr("T + 1 = " + std::to_string(data.size() + 1)));
  BatchSampler exact(data, 2, data.size() - 1, 1);  // one valid offset: 0
  EXPECT_EQ(exact.next().offsets, (std::vector<int64_t>{0, 0}));
}

// ---- the real corpus (optional)
// ------------------------------------------------------------------

TEST(DefaultCorpus, LoadsWhenBuilt) {
  const char* dir = std::getenv("SWITCHYARD_CORPUS_DIR");
  if (dir == nullptr)
    GTEST_SKIP() << "set SWITCHYARD_CORPUS_DIR to a scripts/build-corpus.sh output";
  for (const char* split : {"train", "val"}) {
    const ByteCorpus c = load_byte_corpus(dir, split);
    EXPECT_GT(c.size(), 0) << split;
    EXPECT_EQ(c.domain_names, (std::vector<std::string>{"prose", "code", "dictionary", "manual"}));
    std::set<uint8_t> seen(c.domains.begin(), c.domains.end());
    EXPECT_EQ(seen.size(), 4u) << split;
  }
}

}  // namespace
}  // namespace switchyard
