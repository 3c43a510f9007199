"""The Anthropic Messages API in front of the gateway (`POST /v1/messages`,
`/v1/messages/count_tokens`, also under `/anthropic`): `wire` (the request's Structs),
`decode` (-> the canonical request), `reply` and `stream` (canonical answers -> Messages),
`errors` (Anthropic's error shape), `handlers` (the routes)."""
