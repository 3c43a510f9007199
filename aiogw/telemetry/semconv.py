"""The OpenTelemetry attribute names aiogw's spans carry, in one place.

GenAI names follow the OpenTelemetry semantic conventions for generative AI (client spans:
`gen_ai.*`, still "development" status upstream, so a rename there is one edit here); HTTP,
server and error names are the stable general conventions. aiogw's own attributes are
namespaced `aiogw.*`."""

from __future__ import annotations

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"  # chat | embeddings
GEN_AI_SYSTEM = "gen_ai.system"  # the older name of gen_ai.provider.name, kept for older backends
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"

HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"
URL_PATH = "url.path"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

# gen_ai.provider.name per aiogw provider type (the conventions' well-known values).
PROVIDER_NAMES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "qwen": "qwen",  # not (yet) a well-known value
    "openai-compatible": "openai",  # the wire protocol; the account name is in aiogw.provider
}
