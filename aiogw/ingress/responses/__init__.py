"""The OpenAI Responses ingress (`POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`):
Responses requests decoded into the canonical chat request (`decode`), answers encoded as
Response objects (`answer`) and typed stream events (`stream`), optionally kept in the
store for `previous_response_id` (`state`), served by `handlers`."""
