from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    SUCCESS: _ClassVar[Outcome]
    ERROR: _ClassVar[Outcome]
    TIMEOUT: _ClassVar[Outcome]
    RATE_LIMITED: _ClassVar[Outcome]

class HealthState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATE_UNSPECIFIED: _ClassVar[HealthState]
    HEALTHY: _ClassVar[HealthState]
    DEGRADED: _ClassVar[HealthState]
    DOWN: _ClassVar[HealthState]

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    CLOSED: _ClassVar[BreakerState]
    OPEN: _ClassVar[BreakerState]
    HALF_OPEN: _ClassVar[BreakerState]

class BudgetState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_STATE_UNSPECIFIED: _ClassVar[BudgetState]
    BUDGET_OK: _ClassVar[BudgetState]
    BUDGET_PACING: _ClassVar[BudgetState]
    BUDGET_EXHAUSTED: _ClassVar[BudgetState]
OUTCOME_UNSPECIFIED: Outcome
SUCCESS: Outcome
ERROR: Outcome
TIMEOUT: Outcome
RATE_LIMITED: Outcome
HEALTH_STATE_UNSPECIFIED: HealthState
HEALTHY: HealthState
DEGRADED: HealthState
DOWN: HealthState
BREAKER_STATE_UNSPECIFIED: BreakerState
CLOSED: BreakerState
OPEN: BreakerState
HALF_OPEN: BreakerState
BUDGET_STATE_UNSPECIFIED: BudgetState
BUDGET_OK: BudgetState
BUDGET_PACING: BudgetState
BUDGET_EXHAUSTED: BudgetState

class Weights(_message.Message):
    __slots__ = ("quality", "cost", "latency")
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    quality: float
    cost: float
    latency: float
    def __init__(self, quality: _Optional[float] = ..., cost: _Optional[float] = ..., latency: _Optional[float] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("task_class", "request_id", "candidates", "max_latency_ms", "max_cost_usd", "input_tokens", "max_output_tokens", "budget_key", "weights", "quality_target", "value_usd_per_quality", "value_usd_per_second", "prompt", "messages", "tags", "embedding")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_KEY_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_TARGET_FIELD_NUMBER: _ClassVar[int]
    VALUE_USD_PER_QUALITY_FIELD_NUMBER: _ClassVar[int]
    VALUE_USD_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    task_class: str
    request_id: str
    candidates: _containers.RepeatedScalarFieldContainer[str]
    max_latency_ms: float
    max_cost_usd: float
    input_tokens: int
    max_output_tokens: int
    budget_key: str
    weights: Weights
    quality_target: float
    value_usd_per_quality: float
    value_usd_per_second: float
    prompt: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    tags: _containers.ScalarMap[str, str]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, task_class: _Optional[str] = ..., request_id: _Optional[str] = ..., candidates: _Optional[_Iterable[str]] = ..., max_latency_ms: _Optional[float] = ..., max_cost_usd: _Optional[float] = ..., input_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., budget_key: _Optional[str] = ..., weights: _Optional[_Union[Weights, _Mapping]] = ..., quality_target: _Optional[float] = ..., value_usd_per_quality: _Optional[float] = ..., value_usd_per_second: _Optional[float] = ..., prompt: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., tags: _Optional[_Mapping[str, str]] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("model", "provider")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ...) -> None: ...

class Expected(_message.Message):
    __slots__ = ("cost_usd", "latency_ms", "quality", "success_rate", "latency_p95_ms")
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    cost_usd: float
    latency_ms: float
    quality: float
    success_rate: float
    latency_p95_ms: float
    def __init__(self, cost_usd: _Optional[float] = ..., latency_ms: _Optional[float] = ..., quality: _Optional[float] = ..., success_rate: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("decision_id", "model", "provider", "fallbacks", "propensity", "expected", "reason", "policy", "task_class", "replayed", "expires_at_unix_ms", "budget_key", "input_tokens", "max_output_tokens", "classified_by", "shadow", "experiment_group", "cache_hit")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_KEY_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFIED_BY_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_GROUP_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    model: str
    provider: str
    fallbacks: _containers.RepeatedCompositeFieldContainer[ModelRef]
    propensity: float
    expected: Expected
    reason: str
    policy: str
    task_class: str
    replayed: bool
    expires_at_unix_ms: int
    budget_key: str
    input_tokens: int
    max_output_tokens: int
    classified_by: str
    shadow: ModelRef
    experiment_group: str
    cache_hit: CacheHit
    def __init__(self, decision_id: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., fallbacks: _Optional[_Iterable[_Union[ModelRef, _Mapping]]] = ..., propensity: _Optional[float] = ..., expected: _Optional[_Union[Expected, _Mapping]] = ..., reason: _Optional[str] = ..., policy: _Optional[str] = ..., task_class: _Optional[str] = ..., replayed: bool = ..., expires_at_unix_ms: _Optional[int] = ..., budget_key: _Optional[str] = ..., input_tokens: _Optional[int] = ..., max_output_tokens: _Optional[int] = ..., classified_by: _Optional[str] = ..., shadow: _Optional[_Union[ModelRef, _Mapping]] = ..., experiment_group: _Optional[str] = ..., cache_hit: _Optional[_Union[CacheHit, _Mapping]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("decision_id", "model", "outcome", "latency_ms", "ttft_ms", "input_tokens", "output_tokens", "cost_usd", "quality", "tags", "shadow", "response")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    model: str
    outcome: Outcome
    latency_ms: float
    ttft_ms: float
    input_tokens: int
    output_tokens: int
    cost_usd: float
    quality: float
    tags: _containers.ScalarMap[str, str]
    shadow: bool
    response: str
    def __init__(self, decision_id: _Optional[str] = ..., model: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., latency_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., quality: _Optional[float] = ..., tags: _Optional[_Mapping[str, str]] = ..., shadow: bool = ..., response: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("accepted", "duplicate", "arm", "late", "deferred")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    duplicate: bool
    arm: ArmStats
    late: bool
    deferred: bool
    def __init__(self, accepted: bool = ..., duplicate: bool = ..., arm: _Optional[_Union[ArmStats, _Mapping]] = ..., late: bool = ..., deferred: bool = ...) -> None: ...

class ReportHealthRequest(_message.Message):
    __slots__ = ("model", "provider", "state", "ttl_seconds", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    state: HealthState
    ttl_seconds: int
    reason: str
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., state: _Optional[_Union[HealthState, str]] = ..., ttl_seconds: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ReportHealthResponse(_message.Message):
    __slots__ = ("models", "until_unix_ms")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    until_unix_ms: int
    def __init__(self, models: _Optional[_Iterable[str]] = ..., until_unix_ms: _Optional[int] = ...) -> None: ...

class GetArmStatsRequest(_message.Message):
    __slots__ = ("task_class", "model")
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    task_class: str
    model: str
    def __init__(self, task_class: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class BetaParams(_message.Message):
    __slots__ = ("alpha", "beta", "mean")
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    alpha: float
    beta: float
    mean: float
    def __init__(self, alpha: _Optional[float] = ..., beta: _Optional[float] = ..., mean: _Optional[float] = ...) -> None: ...

class NormalGammaParams(_message.Message):
    __slots__ = ("mu", "kappa", "alpha", "beta")
    MU_FIELD_NUMBER: _ClassVar[int]
    KAPPA_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    BETA_FIELD_NUMBER: _ClassVar[int]
    mu: float
    kappa: float
    alpha: float
    beta: float
    def __init__(self, mu: _Optional[float] = ..., kappa: _Optional[float] = ..., alpha: _Optional[float] = ..., beta: _Optional[float] = ...) -> None: ...

class ArmStats(_message.Message):
    __slots__ = ("task_class", "model", "provider", "pulls", "decayed_pulls", "successes", "failures", "success_posterior", "quality_posterior", "latency_posterior", "cost_posterior", "success_rate_mean", "quality_mean", "latency_mean_ms", "latency_p50_ms", "latency_p95_ms", "cost_mean_usd", "traffic_share", "breaker_state", "breaker_until_unix_ms", "breaker_since_unix_ms", "recent_failure_rate", "last_feedback_unix_ms", "quality_reports", "degraded", "failure_cost_mean_usd", "zero_cost_share", "served_by", "cluster_wide", "cluster_synced_unix_ms", "live_replicas")
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PULLS_FIELD_NUMBER: _ClassVar[int]
    DECAYED_PULLS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_POSTERIOR_FIELD_NUMBER: _ClassVar[int]
    QUALITY_POSTERIOR_FIELD_NUMBER: _ClassVar[int]
    LATENCY_POSTERIOR_FIELD_NUMBER: _ClassVar[int]
    COST_POSTERIOR_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_RATE_MEAN_FIELD_NUMBER: _ClassVar[int]
    QUALITY_MEAN_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    COST_MEAN_USD_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_SHARE_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    BREAKER_UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    BREAKER_SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RECENT_FAILURE_RATE_FIELD_NUMBER: _ClassVar[int]
    LAST_FEEDBACK_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_REPORTS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_COST_MEAN_USD_FIELD_NUMBER: _ClassVar[int]
    ZERO_COST_SHARE_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_WIDE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_SYNCED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LIVE_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    task_class: str
    model: str
    provider: str
    pulls: int
    decayed_pulls: float
    successes: int
    failures: int
    success_posterior: BetaParams
    quality_posterior: BetaParams
    latency_posterior: NormalGammaParams
    cost_posterior: NormalGammaParams
    success_rate_mean: float
    quality_mean: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p95_ms: float
    cost_mean_usd: float
    traffic_share: float
    breaker_state: BreakerState
    breaker_until_unix_ms: int
    breaker_since_unix_ms: int
    recent_failure_rate: float
    last_feedback_unix_ms: int
    quality_reports: int
    degraded: bool
    failure_cost_mean_usd: float
    zero_cost_share: float
    served_by: str
    cluster_wide: bool
    cluster_synced_unix_ms: int
    live_replicas: int
    def __init__(self, task_class: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., pulls: _Optional[int] = ..., decayed_pulls: _Optional[float] = ..., successes: _Optional[int] = ..., failures: _Optional[int] = ..., success_posterior: _Optional[_Union[BetaParams, _Mapping]] = ..., quality_posterior: _Optional[_Union[BetaParams, _Mapping]] = ..., latency_posterior: _Optional[_Union[NormalGammaParams, _Mapping]] = ..., cost_posterior: _Optional[_Union[NormalGammaParams, _Mapping]] = ..., success_rate_mean: _Optional[float] = ..., quality_mean: _Optional[float] = ..., latency_mean_ms: _Optional[float] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., cost_mean_usd: _Optional[float] = ..., traffic_share: _Optional[float] = ..., breaker_state: _Optional[_Union[BreakerState, str]] = ..., breaker_until_unix_ms: _Optional[int] = ..., breaker_since_unix_ms: _Optional[int] = ..., recent_failure_rate: _Optional[float] = ..., last_feedback_unix_ms: _Optional[int] = ..., quality_reports: _Optional[int] = ..., degraded: bool = ..., failure_cost_mean_usd: _Optional[float] = ..., zero_cost_share: _Optional[float] = ..., served_by: _Optional[str] = ..., cluster_wide: bool = ..., cluster_synced_unix_ms: _Optional[int] = ..., live_replicas: _Optional[int] = ...) -> None: ...

class ClassObjective(_message.Message):
    __slots__ = ("task_class", "objective", "quality_target", "class_target", "achieved_share", "realised_quality", "usd_per_quality", "decisions")
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_TARGET_FIELD_NUMBER: _ClassVar[int]
    CLASS_TARGET_FIELD_NUMBER: _ClassVar[int]
    ACHIEVED_SHARE_FIELD_NUMBER: _ClassVar[int]
    REALISED_QUALITY_FIELD_NUMBER: _ClassVar[int]
    USD_PER_QUALITY_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    task_class: str
    objective: str
    quality_target: float
    class_target: bool
    achieved_share: float
    realised_quality: float
    usd_per_quality: float
    decisions: int
    def __init__(self, task_class: _Optional[str] = ..., objective: _Optional[str] = ..., quality_target: _Optional[float] = ..., class_target: bool = ..., achieved_share: _Optional[float] = ..., realised_quality: _Optional[float] = ..., usd_per_quality: _Optional[float] = ..., decisions: _Optional[int] = ...) -> None: ...

class GetArmStatsResponse(_message.Message):
    __slots__ = ("arms", "objectives", "paired", "cache", "served_by")
    ARMS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    PAIRED_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    arms: _containers.RepeatedCompositeFieldContainer[ArmStats]
    objectives: _containers.RepeatedCompositeFieldContainer[ClassObjective]
    paired: _containers.RepeatedCompositeFieldContainer[PairedComparison]
    cache: _containers.RepeatedCompositeFieldContainer[CacheStats]
    served_by: str
    def __init__(self, arms: _Optional[_Iterable[_Union[ArmStats, _Mapping]]] = ..., objectives: _Optional[_Iterable[_Union[ClassObjective, _Mapping]]] = ..., paired: _Optional[_Iterable[_Union[PairedComparison, _Mapping]]] = ..., cache: _Optional[_Iterable[_Union[CacheStats, _Mapping]]] = ..., served_by: _Optional[str] = ...) -> None: ...

class GetBudgetsRequest(_message.Message):
    __slots__ = ("budget_key",)
    BUDGET_KEY_FIELD_NUMBER: _ClassVar[int]
    budget_key: str
    def __init__(self, budget_key: _Optional[str] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("budget_key", "period", "limit_usd", "spent_usd", "reserved_usd", "period_start_unix_ms", "period_end_unix_ms", "pacing_multiplier", "state", "on_cap", "previous_period_spent_usd", "time_zone", "alert_thresholds_crossed", "alert_thresholds", "cluster_shared", "fallback", "fallback_allowance_usd", "fallback_spent_usd", "served_by")
    BUDGET_KEY_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    LIMIT_USD_FIELD_NUMBER: _ClassVar[int]
    SPENT_USD_FIELD_NUMBER: _ClassVar[int]
    RESERVED_USD_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PACING_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ON_CAP_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PERIOD_SPENT_USD_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLDS_CROSSED_FIELD_NUMBER: _ClassVar[int]
    ALERT_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_SHARED_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_ALLOWANCE_USD_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_SPENT_USD_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    budget_key: str
    period: str
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    period_start_unix_ms: int
    period_end_unix_ms: int
    pacing_multiplier: float
    state: BudgetState
    on_cap: str
    previous_period_spent_usd: float
    time_zone: str
    alert_thresholds_crossed: _containers.RepeatedScalarFieldContainer[float]
    alert_thresholds: _containers.RepeatedScalarFieldContainer[float]
    cluster_shared: bool
    fallback: bool
    fallback_allowance_usd: float
    fallback_spent_usd: float
    served_by: str
    def __init__(self, budget_key: _Optional[str] = ..., period: _Optional[str] = ..., limit_usd: _Optional[float] = ..., spent_usd: _Optional[float] = ..., reserved_usd: _Optional[float] = ..., period_start_unix_ms: _Optional[int] = ..., period_end_unix_ms: _Optional[int] = ..., pacing_multiplier: _Optional[float] = ..., state: _Optional[_Union[BudgetState, str]] = ..., on_cap: _Optional[str] = ..., previous_period_spent_usd: _Optional[float] = ..., time_zone: _Optional[str] = ..., alert_thresholds_crossed: _Optional[_Iterable[float]] = ..., alert_thresholds: _Optional[_Iterable[float]] = ..., cluster_shared: bool = ..., fallback: bool = ..., fallback_allowance_usd: _Optional[float] = ..., fallback_spent_usd: _Optional[float] = ..., served_by: _Optional[str] = ...) -> None: ...

class GetBudgetsResponse(_message.Message):
    __slots__ = ("budgets",)
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    budgets: _containers.RepeatedCompositeFieldContainer[Budget]
    def __init__(self, budgets: _Optional[_Iterable[_Union[Budget, _Mapping]]] = ...) -> None: ...

class ResetArmsRequest(_message.Message):
    __slots__ = ("task_class", "model")
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    task_class: str
    model: str
    def __init__(self, task_class: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class ResetArmsResponse(_message.Message):
    __slots__ = ("reset",)
    RESET_FIELD_NUMBER: _ClassVar[int]
    reset: int
    def __init__(self, reset: _Optional[int] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("added", "removed", "repriced", "keys")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    REPRICED_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    repriced: _containers.RepeatedScalarFieldContainer[str]
    keys: int
    def __init__(self, added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., repriced: _Optional[_Iterable[str]] = ..., keys: _Optional[int] = ...) -> None: ...

class GetSpendRequest(_message.Message):
    __slots__ = ("since_unix_ms", "until_unix_ms", "group_by", "budget_key")
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    BUDGET_KEY_FIELD_NUMBER: _ClassVar[int]
    since_unix_ms: int
    until_unix_ms: int
    group_by: _containers.RepeatedScalarFieldContainer[str]
    budget_key: str
    def __init__(self, since_unix_ms: _Optional[int] = ..., until_unix_ms: _Optional[int] = ..., group_by: _Optional[_Iterable[str]] = ..., budget_key: _Optional[str] = ...) -> None: ...

class SpendRow(_message.Message):
    __slots__ = ("key", "spend_usd", "spend_nusd", "requests", "input_tokens", "output_tokens", "mean_cost_usd")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SPEND_USD_FIELD_NUMBER: _ClassVar[int]
    SPEND_NUSD_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MEAN_COST_USD_FIELD_NUMBER: _ClassVar[int]
    key: _containers.RepeatedScalarFieldContainer[str]
    spend_usd: float
    spend_nusd: int
    requests: int
    input_tokens: int
    output_tokens: int
    mean_cost_usd: float
    def __init__(self, key: _Optional[_Iterable[str]] = ..., spend_usd: _Optional[float] = ..., spend_nusd: _Optional[int] = ..., requests: _Optional[int] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., mean_cost_usd: _Optional[float] = ...) -> None: ...

class GetSpendResponse(_message.Message):
    __slots__ = ("columns", "rows", "cluster_wide", "served_by", "detail")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_WIDE_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[SpendRow]
    cluster_wide: bool
    served_by: str
    detail: str
    def __init__(self, columns: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[SpendRow, _Mapping]]] = ..., cluster_wide: bool = ..., served_by: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class MeanInterval(_message.Message):
    __slots__ = ("n", "mean", "lo", "hi")
    N_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    LO_FIELD_NUMBER: _ClassVar[int]
    HI_FIELD_NUMBER: _ClassVar[int]
    n: int
    mean: float
    lo: float
    hi: float
    def __init__(self, n: _Optional[int] = ..., mean: _Optional[float] = ..., lo: _Optional[float] = ..., hi: _Optional[float] = ...) -> None: ...

class PairedComparison(_message.Message):
    __slots__ = ("task_class", "model", "shadow_model", "quality_diff", "cost_diff_usd", "latency_diff_ms")
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SHADOW_MODEL_FIELD_NUMBER: _ClassVar[int]
    QUALITY_DIFF_FIELD_NUMBER: _ClassVar[int]
    COST_DIFF_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_DIFF_MS_FIELD_NUMBER: _ClassVar[int]
    task_class: str
    model: str
    shadow_model: str
    quality_diff: MeanInterval
    cost_diff_usd: MeanInterval
    latency_diff_ms: MeanInterval
    def __init__(self, task_class: _Optional[str] = ..., model: _Optional[str] = ..., shadow_model: _Optional[str] = ..., quality_diff: _Optional[_Union[MeanInterval, _Mapping]] = ..., cost_diff_usd: _Optional[_Union[MeanInterval, _Mapping]] = ..., latency_diff_ms: _Optional[_Union[MeanInterval, _Mapping]] = ...) -> None: ...

class GetAbReportRequest(_message.Message):
    __slots__ = ("task_class", "since_unix_ms", "until_unix_ms")
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    task_class: str
    since_unix_ms: int
    until_unix_ms: int
    def __init__(self, task_class: _Optional[str] = ..., since_unix_ms: _Optional[int] = ..., until_unix_ms: _Optional[int] = ...) -> None: ...

class AbGroup(_message.Message):
    __slots__ = ("task_class", "group", "requests", "with_outcome", "quality", "cost_usd", "latency_p50_ms", "latency_p95_ms", "sla_violations", "sla_violation_rate", "latency_ms")
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WITH_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_MS_FIELD_NUMBER: _ClassVar[int]
    SLA_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    SLA_VIOLATION_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    task_class: str
    group: str
    requests: int
    with_outcome: int
    quality: MeanInterval
    cost_usd: MeanInterval
    latency_p50_ms: float
    latency_p95_ms: float
    sla_violations: int
    sla_violation_rate: MeanInterval
    latency_ms: MeanInterval
    def __init__(self, task_class: _Optional[str] = ..., group: _Optional[str] = ..., requests: _Optional[int] = ..., with_outcome: _Optional[int] = ..., quality: _Optional[_Union[MeanInterval, _Mapping]] = ..., cost_usd: _Optional[_Union[MeanInterval, _Mapping]] = ..., latency_p50_ms: _Optional[float] = ..., latency_p95_ms: _Optional[float] = ..., sla_violations: _Optional[int] = ..., sla_violation_rate: _Optional[_Union[MeanInterval, _Mapping]] = ..., latency_ms: _Optional[_Union[MeanInterval, _Mapping]] = ...) -> None: ...

class AbDifference(_message.Message):
    __slots__ = ("task_class", "quality", "cost_usd", "sla_violation_rate", "latency_ms")
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    SLA_VIOLATION_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    task_class: str
    quality: MeanInterval
    cost_usd: MeanInterval
    sla_violation_rate: MeanInterval
    latency_ms: MeanInterval
    def __init__(self, task_class: _Optional[str] = ..., quality: _Optional[_Union[MeanInterval, _Mapping]] = ..., cost_usd: _Optional[_Union[MeanInterval, _Mapping]] = ..., sla_violation_rate: _Optional[_Union[MeanInterval, _Mapping]] = ..., latency_ms: _Optional[_Union[MeanInterval, _Mapping]] = ...) -> None: ...

class GetAbReportResponse(_message.Message):
    __slots__ = ("groups", "differences")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCES_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[AbGroup]
    differences: _containers.RepeatedCompositeFieldContainer[AbDifference]
    def __init__(self, groups: _Optional[_Iterable[_Union[AbGroup, _Mapping]]] = ..., differences: _Optional[_Iterable[_Union[AbDifference, _Mapping]]] = ...) -> None: ...

class CacheHit(_message.Message):
    __slots__ = ("response", "model", "provider", "age_ms", "source_decision_id", "similarity", "saved_cost_usd", "saved_latency_ms")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    AGE_MS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SAVED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    SAVED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    response: str
    model: str
    provider: str
    age_ms: int
    source_decision_id: str
    similarity: float
    saved_cost_usd: float
    saved_latency_ms: float
    def __init__(self, response: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., age_ms: _Optional[int] = ..., source_decision_id: _Optional[str] = ..., similarity: _Optional[float] = ..., saved_cost_usd: _Optional[float] = ..., saved_latency_ms: _Optional[float] = ...) -> None: ...

class InvalidateCacheRequest(_message.Message):
    __slots__ = ("task_class", "prefix", "tag")
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    task_class: str
    prefix: str
    tag: str
    def __init__(self, task_class: _Optional[str] = ..., prefix: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class InvalidateCacheResponse(_message.Message):
    __slots__ = ("invalidated",)
    INVALIDATED_FIELD_NUMBER: _ClassVar[int]
    invalidated: int
    def __init__(self, invalidated: _Optional[int] = ...) -> None: ...

class CacheStats(_message.Message):
    __slots__ = ("task_class", "mode", "entries", "max_entries", "lookups", "hits", "hit_rate", "saved_cost_usd", "saved_latency_ms", "stored", "evicted", "expired", "invalidated", "bytes", "restored", "shared_hits", "adopted")
    TASK_CLASS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    SAVED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    SAVED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    INVALIDATED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    SHARED_HITS_FIELD_NUMBER: _ClassVar[int]
    ADOPTED_FIELD_NUMBER: _ClassVar[int]
    task_class: str
    mode: str
    entries: int
    max_entries: int
    lookups: int
    hits: int
    hit_rate: float
    saved_cost_usd: float
    saved_latency_ms: float
    stored: int
    evicted: int
    expired: int
    invalidated: int
    bytes: int
    restored: int
    shared_hits: int
    adopted: int
    def __init__(self, task_class: _Optional[str] = ..., mode: _Optional[str] = ..., entries: _Optional[int] = ..., max_entries: _Optional[int] = ..., lookups: _Optional[int] = ..., hits: _Optional[int] = ..., hit_rate: _Optional[float] = ..., saved_cost_usd: _Optional[float] = ..., saved_latency_ms: _Optional[float] = ..., stored: _Optional[int] = ..., evicted: _Optional[int] = ..., expired: _Optional[int] = ..., invalidated: _Optional[int] = ..., bytes: _Optional[int] = ..., restored: _Optional[int] = ..., shared_hits: _Optional[int] = ..., adopted: _Optional[int] = ...) -> None: ...

class BackupRequest(_message.Message):
    __slots__ = ("to_dir",)
    TO_DIR_FIELD_NUMBER: _ClassVar[int]
    to_dir: str
    def __init__(self, to_dir: _Optional[str] = ...) -> None: ...

class BackupResponse(_message.Message):
    __slots__ = ("generation", "records")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    records: int
    def __init__(self, generation: _Optional[int] = ..., records: _Optional[int] = ...) -> None: ...
