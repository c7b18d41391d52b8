"""A small wrapper over the generated stub: route, feedback, and a timed call that reports itself.

Typical use::

    with SwitchyardClient("127.0.0.1:50051") as client:
        with client.call("qa", request_id="req-1", prompt=prompt) as call:
            if call.cache_hit:
                answer = call.cached_response  # the response cache answered: no model to call
            else:
                answer = my_model(call.model, prompt)
                call.tokens(input_tokens=600, output_tokens=280)
                call.respond(answer)  # offered to the class's response cache
        # leaving the block sent Feedback: SUCCESS with the measured latency, or ERROR/TIMEOUT
        # if the block raised (the exception still propagates).

Only the wrapper is hand-written; the messages come from proto/switchyard/v1/switchyard.proto.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence, Union

import grpc

from switchyard.v1 import switchyard_pb2 as pb
from switchyard.v1 import switchyard_pb2_grpc as pb_grpc

#: Deadline for each RPC in seconds: the service answers from memory in well under a millisecond,
#: so a slow answer means a network or server problem worth surfacing quickly.
DEFAULT_TIMEOUT_S = 5.0


class SwitchyardError(Exception):
    """An RPC failed; `code` is the grpc.StatusCode and `details` the service's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str):
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


def _read_pem(root_ca: Union[str, bytes, None]) -> Optional[bytes]:
    if root_ca is None or isinstance(root_ca, bytes):
        return root_ca
    with open(root_ca, "rb") as f:
        return f.read()


class SwitchyardClient:
    """A connection to one Switchyard service.

    target: "host:port". root_ca: PEM bytes or a path to the CA that signed the server's
    certificate; given, the channel uses TLS, otherwise plaintext. api_key: sent on every call as
    `authorization: Bearer <key>` metadata. channel: use this channel instead (tests, custom
    options); target, root_ca are then ignored.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        root_ca: Union[str, bytes, None] = None,
        api_key: Optional[str] = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        channel: Optional[grpc.Channel] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if channel is None:
            pem = _read_pem(root_ca)
            if pem is not None:
                channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=pem))
            else:
                channel = grpc.insecure_channel(target)
        self._channel = channel
        self._stub = pb_grpc.RouteStub(channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout_s = timeout_s
        self._clock = clock

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "SwitchyardClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- RPCs ------------------------------------------------------------------------------------

    def _invoke(self, name: str, request):
        method = getattr(self._stub, name)
        try:
            return method(request, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.RpcError as e:  # grpc.Call carries code() and details()
            raise SwitchyardError(name, e.code(), e.details() or "") from e

    def route(
        self,
        task_class: str,
        *,
        request_id: str = "",
        candidates: Sequence[str] = (),
        max_latency_ms: float = 0.0,
        max_cost_usd: float = 0.0,
        input_tokens: int = 0,
        max_output_tokens: int = 0,
        budget_key: str = "",
        prompt: str = "",
        messages: Sequence[Union[pb.ChatMessage, tuple]] = (),
        embedding: Sequence[float] = (),
    ) -> pb.RouteResponse:
        """Asks which model a request of `task_class` should call (0 / empty = the class default).
        `prompt` / `messages` (ChatMessage or (role, content) pairs) let the service count tokens
        and answer from its response cache; `embedding` is the prompt's vector for a semantic cache
        configured with `dimensions`. A response with `cache_hit` set names no model to call."""
        return self._invoke(
            "Route",
            pb.RouteRequest(
                task_class=task_class,
                request_id=request_id,
                candidates=list(candidates),
                max_latency_ms=max_latency_ms,
                max_cost_usd=max_cost_usd,
                input_tokens=input_tokens,
                max_output_tokens=max_output_tokens,
                budget_key=budget_key,
                prompt=prompt,
                messages=[m if isinstance(m, pb.ChatMessage) else pb.ChatMessage(role=m[0], content=m[1]) for m in messages],
                embedding=list(embedding),
            ),
        )

    def feedback(
        self,
        decision_id: str,
        *,
        outcome: int = pb.SUCCESS,
        model: str = "",
        latency_ms: Optional[float] = None,
        ttft_ms: Optional[float] = None,
        input_tokens: Optional[int] = None,
        output_tokens: Optional[int] = None,
        cost_usd: Optional[float] = None,
        quality: Optional[float] = None,
        response: str = "",
    ) -> pb.FeedbackResponse:
        """Reports what happened for a decision; None leaves a field unset (the service then
        computes cost from its price table). `outcome=pb.OUTCOME_UNSPECIFIED` with only `quality`
        sends a late quality score. `response` (the answer, or your handle to it) is stored by the
        class's response cache once the call succeeded with quality >= `cache.min_quality`."""
        fields = dict(
            latency_ms=latency_ms,
            ttft_ms=ttft_ms,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            quality=quality,
        )
        request = pb.FeedbackRequest(
            decision_id=decision_id,
            model=model,
            outcome=outcome,
            response=response,
            **{k: v for k, v in fields.items() if v is not None},
        )
        return self._invoke("Feedback", request)

    def arm_stats(self, task_class: str = "", model: str = "") -> pb.GetArmStatsResponse:
        return self._invoke("GetArmStats", pb.GetArmStatsRequest(task_class=task_class, model=model))

    def budgets(self, budget_key: str = "") -> pb.GetBudgetsResponse:
        return self._invoke("GetBudgets", pb.GetBudgetsRequest(budget_key=budget_key))

    def invalidate_cache(self, task_class: str = "", prefix: str = "", tag: str = "") -> int:
        """Admin: drops response-cache entries (of `task_class`, whose normalised prompt starts with
        `prefix`, carrying `tag` such as "model:gpt-4o"); returns how many."""
        request = pb.InvalidateCacheRequest(task_class=task_class, prefix=prefix, tag=tag)
        return self._invoke("InvalidateCache", request).invalidated

    def call(self, task_class: str, **route_fields) -> "Call":
        """Routes now and returns a context manager that times the block and reports on exit."""
        return Call(self, self.route(task_class, **route_fields), self._clock)


def _needs_no_model(decision: pb.RouteResponse) -> bool:
    """True when the service answered without a model to call: a cache hit, or an empty model."""
    return decision.HasField("cache_hit") or not decision.model


class Call:
    """One routed request. Inside the `with` block call `call.model`; set what you know with
    `tokens()`, `cost()`, `quality()`. On exit Feedback is sent with the measured latency:
    SUCCESS if the block finished, TIMEOUT for TimeoutError, ERROR for any other exception (which
    propagates). `fallback()` reports the current model as failed and moves to the next one.
    When the service needed no model (a cache hit), `model` is None, `cached_response` holds the
    stored answer and nothing is reported on exit (report satisfaction with `satisfaction()`).
    `respond(text)` offers the model's answer to the response cache with the SUCCESS report.
    """

    def __init__(self, client: SwitchyardClient, decision: pb.RouteResponse, clock: Callable[[], float]):
        self.decision = decision
        self.cache_hit = _needs_no_model(decision)
        self.model: Optional[str] = None if self.cache_hit else decision.model
        self.provider: Optional[str] = None if self.cache_hit else decision.provider
        self.cached_response: Optional[str] = (
            decision.cache_hit.response if decision.HasField("cache_hit") else None
        )
        self.response: Optional[pb.FeedbackResponse] = None
        self.responses: list = []
        self._client = client
        self._clock = clock
        self._fallbacks = list(decision.fallbacks)
        self._started: Optional[float] = None
        self._fields: dict = {}

    @property
    def decision_id(self) -> str:
        return self.decision.decision_id

    def tokens(self, input_tokens: Optional[int] = None, output_tokens: Optional[int] = None) -> None:
        if input_tokens is not None:
            self._fields["input_tokens"] = int(input_tokens)
        if output_tokens is not None:
            self._fields["output_tokens"] = int(output_tokens)

    def cost(self, cost_usd: float) -> None:
        self._fields["cost_usd"] = float(cost_usd)

    def quality(self, score: float) -> None:
        self._fields["quality"] = float(score)

    def respond(self, response: str) -> None:
        """The model's answer (or a handle to it), sent with the SUCCESS report for the cache."""
        self._fields["response"] = str(response)

    def satisfaction(self, score: float) -> Optional[pb.FeedbackResponse]:
        """Reports how good a cached answer was (only for a cache hit; teaches no model)."""
        if not self.cache_hit:
            return None
        response = self._client.feedback(self.decision_id, outcome=pb.SUCCESS, quality=float(score))
        self.responses.append(response)
        return response

    def _elapsed_ms(self) -> float:
        start = self._started if self._started is not None else self._clock()
        return max(0.0, (self._clock() - start) * 1000.0)

    def _report(self, outcome: int) -> pb.FeedbackResponse:
        fields = dict(self._fields)
        if outcome != pb.SUCCESS:
            fields.pop("quality", None)  # the service refuses a quality score for a failed call
            fields.pop("response", None)  # and a failed call's output is not worth caching
        response = self._client.feedback(
            self.decision_id, outcome=outcome, model=self.model or "", latency_ms=self._elapsed_ms(), **fields
        )
        self.responses.append(response)
        return response

    def fallback(self, outcome: int = pb.ERROR) -> Optional[str]:
        """Reports the current model's failure and switches to the next fallback (None when there
        is none left); the timer restarts for the fallback's own latency."""
        if self.model is None:
            return None
        self._report(outcome)
        self._fields = {}
        if not self._fallbacks:
            self.model = self.provider = None
            return None
        nxt = self._fallbacks.pop(0)
        self.model, self.provider = nxt.model, nxt.provider
        self._started = self._clock()
        return self.model

    def __enter__(self) -> "Call":
        self._started = self._clock()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self.model is None:
            return False
        if exc_type is None:
            self.response = self._report(pb.SUCCESS)
            return False
        outcome = pb.TIMEOUT if issubclass(exc_type, TimeoutError) else pb.ERROR
        try:
            self.response = self._report(outcome)
        except SwitchyardError:
            pass  # the block's own exception matters more than a lost report
        return False
