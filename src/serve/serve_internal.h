// Private helpers shared by the gateway's sources (src/serve/).
#pragma once

#include <string>

namespace switchyard::serve {

// An upstream base address: scheme://host[:port][/prefix].
struct UpstreamUrl {
  std::string scheme;  // "http" or "https"
  std::string host;
  int port = 0;                // the scheme's default when the URL has none
  std::string prefix;          // path prefix without a trailing '/', e.g. "" or "/openai"
  std::string origin() const;  // scheme://host:port
};
// Throws switchyard::Error naming `context` and the URL.
UpstreamUrl parse_upstream_url(const std::string& url, const std::string& context);

}  // namespace switchyard::serve
