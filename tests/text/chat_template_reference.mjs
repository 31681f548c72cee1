// Renders chat templates with @huggingface/jinja, the reference for test_chat_template.
// Usage: node chat_template_reference.mjs NODE_MODULES_DIR REQUEST.json
// REQUEST.json is an array of {template, context}; prints an array of {ok, output} or
// {ok: false, error}, one per request, as JSON on stdout.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modulesDir, requestPath] = process.argv.slice(2);
if (!modulesDir || !requestPath) {
  console.error("usage: node chat_template_reference.mjs NODE_MODULES_DIR REQUEST.json");
  process.exit(2);
}
// Resolved by path: the package lives in the test tree's npm folder, not beside this script.
const entry = join(modulesDir, "@huggingface", "jinja", "dist", "index.js");
const { Template } = await import(pathToFileURL(entry).href);

const requests = JSON.parse(readFileSync(requestPath, "utf8"));
const results = requests.map(({ template, context }) => {
  try {
    return { ok: true, output: new Template(template).render(context) };
  } catch (error) {
    return { ok: false, error: String(error?.message ?? error) };
  }
});
process.stdout.write(JSON.stringify(results));
