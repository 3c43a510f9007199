"""OpenTelemetry traces: a server span per API request and a client span per upstream
attempt, with the GenAI semantic conventions, exported over OTLP/HTTP in batches from a
background thread. Built only when `telemetry.otlp_endpoint` is set: otherwise nothing here
is imported by the request path and no span object is ever made.

W3C trace context: a caller's `traceparent` makes the server span its child, and each
attempt's `traceparent` goes upstream so a provider-side trace joins ours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from aiogw.config import TelemetryConfig
from aiogw.telemetry import semconv as sc
from aiogw.version import __version__

_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """The tracer and its exporter; one per process."""

    def __init__(self, cfg: TelemetryConfig) -> None:
        assert cfg.otlp_endpoint is not None
        endpoint = cfg.otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        resource = Resource.create({"service.name": cfg.service_name, "service.version": __version__})
        self.provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)))
        self.provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=endpoint, headers=dict(cfg.otlp_headers), timeout=5),
                schedule_delay_millis=cfg.export_delay_ms,
            )
        )
        self.tracer = self.provider.get_tracer("aiogw", __version__)

    # --- server spans -------------------------------------------------------------------

    def start_request(self, method: str, path: str, headers: Mapping[str, str]) -> tuple[Span, object]:
        """The request's server span, current until `end_request`; the caller's traceparent
        (if any) is its parent."""
        parent = _PROPAGATOR.extract(headers)
        span = self.tracer.start_span(
            f"{method} {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={sc.HTTP_REQUEST_METHOD: method, sc.URL_PATH: path, sc.HTTP_ROUTE: path},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def end_request(span: Span, token: object, status: int, attributes: dict[str, Any]) -> None:
        span.set_attribute(sc.HTTP_RESPONSE_STATUS_CODE, status)
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    # --- attempt spans ------------------------------------------------------------------

    def start_attempt(
        self,
        *,
        provider_type: str,
        provider: str,
        model: str,
        url: str,
        operation: str,
        attempt: int,
        failover_reason: str | None,
    ) -> tuple[Span, object]:
        """A client span for one upstream call, current while it runs (so `inject` sees it)."""
        parts = urlsplit(url)
        system = sc.PROVIDER_NAMES.get(provider_type, provider_type)
        attributes: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: operation,
            sc.GEN_AI_SYSTEM: system,
            sc.GEN_AI_PROVIDER_NAME: system,
            sc.GEN_AI_REQUEST_MODEL: model,
            sc.SERVER_ADDRESS: parts.hostname or "",
            sc.SERVER_PORT: parts.port or (443 if parts.scheme == "https" else 80),
            "aiogw.provider": provider,
            "aiogw.attempt": attempt,
        }
        if failover_reason is not None:
            attributes["aiogw.failover_reason"] = failover_reason
        span = self.tracer.start_span(f"{operation} {model}", kind=SpanKind.CLIENT, attributes=attributes)
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    @staticmethod
    def end_attempt(
        span: Span, token: object, failure: str | None, error: str | None, attributes: dict[str, Any]
    ) -> None:
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if failure is not None:
            span.set_attribute(sc.ERROR_TYPE, failure)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    @staticmethod
    def inject(headers: dict[str, str]) -> dict[str, str]:
        """Upstream headers with the current span's traceparent (a copy: Calls are frozen)."""
        out = dict(headers)
        _PROPAGATOR.inject(out)
        return out

    @staticmethod
    def usage_attributes(
        usage: Any, finish_reasons: Sequence[str] | None, response_model: str | None
    ) -> dict[str, Any]:
        attrs: dict[str, Any] = {sc.GEN_AI_RESPONSE_MODEL: response_model}
        if usage is not None:
            attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = usage.prompt_tokens
            attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.completion_tokens
        if finish_reasons:
            attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = [str(r) for r in finish_reasons]
        return attrs

    def shutdown(self) -> None:
        self.provider.shutdown()  # exports what is still queued
