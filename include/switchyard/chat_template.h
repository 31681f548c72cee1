// Hugging Face chat templates: the Jinja subset that tokenizer_config.json templates use, rendered
// as transformers' apply_chat_template renders them (jinja2's sandbox with trim_blocks and
// lstrip_blocks, raise_exception(), the json.dumps-based tojson filter).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace switchyard::text {

namespace jinja {
struct Program;
}

// What a chat template needs from a model's tokenizer_config.json.
struct ChatTemplateConfig {
  std::string chat_template;
  std::optional<std::string> bos_token;  // unset: the template sees bos_token as undefined
  std::optional<std::string> eos_token;
};

// Reads chat_template (a string, or a list of {name, template} from which `name` is taken) and
// bos_token / eos_token (a string, an {"content": ...} object, or null). `source` names the file
// in errors.
ChatTemplateConfig chat_template_config_from_json(const nlohmann::ordered_json& tokenizer_config,
                                                  std::string_view source,
                                                  std::string_view name = "default");
ChatTemplateConfig load_chat_template_config(const std::string& path,
                                             std::string_view name = "default");

struct ChatRenderOptions {
  bool add_generation_prompt = false;
  // Further template variables (e.g. {"enable_thinking": false}, {"tools": [...]}); they replace
  // the defaults of chat_template_context.
  nlohmann::ordered_json variables = nlohmann::ordered_json::object();
};

// The variables transformers renders with: messages, tools = none, documents = none,
// add_generation_prompt, bos_token / eos_token when set, then options.variables.
nlohmann::ordered_json chat_template_context(const ChatTemplateConfig& config,
                                             const nlohmann::ordered_json& messages,
                                             const ChatRenderOptions& options);

class ChatTemplate {
 public:
  // Parses `source`. A syntax error or an unsupported construct is an Error naming it and its
  // line:column in the template.
  explicit ChatTemplate(std::string_view source);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // Renders with the members of `context` (a JSON object) as variables. raise_exception(msg)
  // throws an Error carrying msg; so do runtime errors (an attribute of an undefined value, a
  // type error), with the line:column of the expression. The parsed template is not modified, so
  // threads may render one template at the same time.
  std::string render(const nlohmann::ordered_json& context) const;

 private:
  std::unique_ptr<const jinja::Program> program_;
};

// Parses config.chat_template and renders chat_template_context(config, messages, options).
std::string apply_chat_template(const ChatTemplateConfig& config,
                                const nlohmann::ordered_json& messages,
                                const ChatRenderOptions& options = {});

}  // namespace switchyard::text
