#include "text/tokenizer_post_processor.h"

#include <switchyard/error.h>

namespace switchyard::text {

namespace {

class Template : public PostProcessor {
 public:
  Template(const Field& field, const std::function<bool(int32_t)>& is_token) {
    const Field special_tokens = field.at("special_tokens");
    const Field single = field.at("single");
    for (size_t i = 0; i < single.array().size(); ++i) {
      const Field item = single.at(i);
      if (const auto sequence = item.find("Sequence")) {
        const Field name = sequence->at("id");
        if (name.string() != "A") {
          name.fail(
              fmt::format("is \"{}\"; a single-sequence template can only hold A", name.string()));
        }
        pieces_.push_back({true, {}});
      } else if (const auto special = item.find("SpecialToken")) {
        const Field name = special->at("id");
        const Field entry = special_tokens.at(name.string());
        const Field ids = entry.at("ids");
        Piece piece{false, {}};
        for (size_t j = 0; j < ids.array().size(); ++j) {
          const int32_t id = ids.at(j).id();
          if (!is_token(id)) ids.at(j).fail(fmt::format("is {}, which is not a token id", id));
          piece.ids.push_back(id);
        }
        pieces_.push_back(std::move(piece));
      } else {
        item.fail("must hold \"Sequence\" or \"SpecialToken\"");
      }
    }
  }

  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    std::vector<int32_t> out;
    for (const Piece& piece : pieces_) {
      if (piece.sequence) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else if (add_special_tokens) {
        out.insert(out.end(), piece.ids.begin(), piece.ids.end());
      }
    }
    ids = std::move(out);
  }

 private:
  struct Piece {
    bool sequence;  // the encoded text itself, else special token ids
    std::vector<int32_t> ids;
  };
  std::vector<Piece> pieces_;
};

class Passthrough : public PostProcessor {
 public:
  void process(std::vector<int32_t>&, bool) const override {}
};

class Sequence : public PostProcessor {
 public:
  Sequence(const Field& field, const std::function<bool(int32_t)>& is_token) {
    const Field list = field.at("processors");
    for (size_t i = 0; i < list.array().size(); ++i) {
      steps_.push_back(parse_post_processor(list.at(i), is_token));
    }
  }
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    for (const auto& step : steps_) step->process(ids, add_special_tokens);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

}  // namespace

std::unique_ptr<PostProcessor> parse_post_processor(const Field& field,
                                                    const std::function<bool(int32_t)>& is_token) {
  const std::string type = field.at("type").string();
  if (type == "TemplateProcessing") return std::make_unique<Template>(field, is_token);
  if (type == "ByteLevel") return std::make_unique<Passthrough>();
  if (type == "Sequence") return std::make_unique<Sequence>(field, is_token);
  field.at("type").fail(fmt::format(
      "is \"{}\", which switchyard does not support (supported: TemplateProcessing, ByteLevel, "
      "Sequence)",
      type));
}

}  // namespace switchyard::text
