#include "switchyard/chat_template.h"

#include "switchyard/error.h"
#include "switchyard/file_util.h"
#include "text/jinja_ast.h"

namespace switchyard::text {

namespace {

std::optional<std::string> special_token(const nlohmann::ordered_json& config,
                                         std::string_view source, const char* field) {
  const auto it = config.find(field);
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  // Serialized AddedToken: {"__type": "AddedToken", "content": "<s>", ...}.
  if (it->is_object()) {
    const auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  fail("{}: {} must be a string or an object with a string \"content\", got {}", source, field,
       it->dump());
}

}  // namespace

ChatTemplateConfig chat_template_config_from_json(const nlohmann::ordered_json& tokenizer_config,
                                                  std::string_view source, std::string_view name) {
  if (!tokenizer_config.is_object()) fail("{}: expected a JSON object", source);
  const auto it = tokenizer_config.find("chat_template");
  if (it == tokenizer_config.end() || it->is_null()) fail("{}: chat_template is missing", source);
  ChatTemplateConfig config;
  if (it->is_string()) {
    config.chat_template = it->get<std::string>();
  } else if (it->is_array()) {
    std::string names;
    bool found = false;
    for (const auto& entry : *it) {
      if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
          !entry.contains("template") || !entry["template"].is_string()) {
        fail(
            "{}: chat_template list entries must be {{\"name\": string, \"template\": string}}, "
            "got {}",
            source, entry.dump());
      }
      const std::string entry_name = entry["name"].get<std::string>();
      if (entry_name == name && !found) {
        config.chat_template = entry["template"].get<std::string>();
        found = true;
      }
      names += (names.empty() ? "" : ", ") + entry_name;
    }
    if (!found) {
      fail("{}: chat_template has no template named '{}' (it has: {})", source, name, names);
    }
  } else {
    fail("{}: chat_template must be a string or a list of {{name, template}}, got {}", source,
         it->type_name());
  }
  config.bos_token = special_token(tokenizer_config, source, "bos_token");
  config.eos_token = special_token(tokenizer_config, source, "eos_token");
  return config;
}

ChatTemplateConfig load_chat_template_config(const std::string& path, std::string_view name) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(read_file_text(path));
  } catch (const nlohmann::json::parse_error& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
  return chat_template_config_from_json(j, path, name);
}

nlohmann::ordered_json chat_template_context(const ChatTemplateConfig& config,
                                             const nlohmann::ordered_json& messages,
                                             const ChatRenderOptions& options) {
  if (!messages.is_array()) fail("chat template: messages must be a JSON array");
  if (!options.variables.is_object()) fail("chat template: variables must be a JSON object");
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  context["messages"] = messages;
  context["tools"] = nullptr;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = options.add_generation_prompt;
  if (config.bos_token) context["bos_token"] = *config.bos_token;
  if (config.eos_token) context["eos_token"] = *config.eos_token;
  for (const auto& [key, value] : options.variables.items()) context[key] = value;
  return context;
}

ChatTemplate::ChatTemplate(std::string_view source)
    : program_(std::make_unique<jinja::Program>(jinja::parse(jinja::tokenize(source)))) {}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
  return jinja::render(*program_, context);
}

std::string apply_chat_template(const ChatTemplateConfig& config,
                                const nlohmann::ordered_json& messages,
                                const ChatRenderOptions& options) {
  return ChatTemplate(config.chat_template)
      .render(chat_template_context(config, messages, options));
}

}  // namespace switchyard::text
