"""Every place where sglang-esamp hooks into SGLang 0.5.23, in one table.

Each hook is an adapter: it turns SGLang's call into one call of the ESamp pieces and
returns. All are registered in every process SGLang starts (it costs nothing elsewhere);
the ones of the scheduler pass straight through until a runtime exists (``--enable-esamp``).
What each step of a decode does is in ``runtime.py``.

| hooked path                                           | type   | why                                      |
| ----------------------------------------------------- | ------ | ---------------------------------------- |
| server_args.ServerArgs.add_cli_args                   | AFTER  | --enable-esamp and --esamp-* flags        |
| server_args.prepare_server_args                       | AROUND | export the flags' config; refuse spec/pp; TP token sync |
| entrypoints.engine._set_envs_and_config                | AFTER  | CPU ``serve``: fork the children, not spawn |
| api_types.decode_SamplingParams                       | AROUND | /generate: explore checked before a stream starts |
| TokenizerManager.__init__                             | AFTER  | validate explore, carry it in custom_params |
| TokenizerManager.generate_request                     | BEFORE | the scope header's value                  |
| TokenizerManager._create_tokenized_object             | BEFORE | each prompt's group's DP rank             |
| TokenizerManager._validate_one_request                | BEFORE | token ids outside the vocabulary are a 400 |
| OpenAIServingCompletion._build_sampling_params        | AFTER  | explore from the /v1/completions body     |
| ChatCompletionRequest.to_sampling_params              | AFTER  | explore from the /v1/chat body            |
| TokenizerManager.update_request_meta_info             | AFTER  | meta_info["esamp"] as one object          |
| OpenAIServingCompletion._build_completion_response    | AFTER  | the choices' metadata in ``sglext.esamp`` |
| OpenAIServingChat._build_chat_response                | AFTER  | the choices' metadata in ``sglext.esamp`` |
| KVCacheConfigurator._profile_available_bytes          | AROUND | the KV budget gives up ESamp's bytes      |
| ModelRunner.init_attention_backends                   | BEFORE | build the runtime (before graph capture)  |
| forward_batch_info.get_server_return_hidden_states_mode | AROUND | LAST capture, CUDA graphs included      |
| ForwardBatch.init_new                                 | AFTER  | the batch's Step (``forward_batch.esamp``) |
| ModelRunner.forward                                   | AROUND | the Step is active while the model runs   |
| LogitsProcessor._get_hidden_states_to_store           | AROUND | keep the LM-head input; prompt fit        |
| ModelRunner.sample                                    | AROUND | predict, plan, sample, train              |
| ModelRunner._preprocess_logits                        | AFTER  | tilt, after penalties, grammar and bias   |
| Sampler._sample_from_probs                            | AROUND | stratified rows draw by their codes       |
| Scheduler._create_generation_req                      | AFTER  | a request joins its group (``req.esamp``) |
| SchedulerOutputStreamer.stream_output                 | BEFORE | finished requests: metadata, release      |
| SchedulerOutputStreamer.is_request_level_customized_info_key | AROUND | "esamp" is sent once      |
| Scheduler.send_abort_output                           | BEFORE | aborted queued requests release           |
| Scheduler.maybe_sleep_on_idle                         | AROUND | idle: train the base instead of sleeping  |
| Scheduler.get_internal_state                          | AFTER  | ESamp counters in /get_server_info        |
| Scheduler.init_metrics_collector                      | AFTER  | SGLang's labels for ESamp's /metrics series |
| parallel_state.init_model_parallel_group              | AROUND | CPU only: no NCCL communicator (TP over gloo) |

Arguments, by hook type (SGLang's ``HookRegistry``), in the same order everywhere below:

- BEFORE: ``hook(*args)``, the wrapped call's own arguments, ``self`` (or ``cls``) first,
  named here after what it is (``runner``, ``scheduler``, ``manager``);
- AFTER: ``hook(result, *args)``, the call's return value first, then the same;
- AROUND: ``hook(original, *args)``, the wrapped function first, which the hook calls itself.

The OpenAI request models also get ``extra="allow"`` so that ``explore`` survives parsing,
and SGLang's response extension ``SglExt`` so that it can carry ``esamp``.
"""

from __future__ import annotations

import functools
import logging

from sglang.api.v1.api_types import JsonContractError
from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from . import flags
from .footprint import reserved_bytes, step_bytes
from .launcher import FORK_ENV, fork_children
from .metrics import ESampMetrics
from .params import CUSTOM_KEY, REQUEST_KEYS, SCOPE_KEY, check_custom_params, check_request, parse_request, with_scope
from .routing import DPRouter
from .runtime import ESampRuntime

logger = logging.getLogger(__name__)

_RUNTIME: ESampRuntime | None = None  # this scheduler process's runtime, once the model is loaded
_METRIC_LABELS: dict | None = None  # SGLang's metric labels, when this scheduler reports /metrics


# ---- launcher: flags ----


def add_cli_args(result, parser):
    flags.add_arguments(parser)


def prepare_server_args(original, argv):
    cfg = flags.parse(argv)
    flags.export(cfg)
    server_args = original(argv)
    flags.check_server_args(server_args, cfg)
    flags.sync_tp_tokens(server_args.tp_size, cfg)
    return server_args


def set_envs_and_config(result, server_args):
    if fork_children(server_args.device):
        logger.info("CPU launcher: SGLang's child processes are forked, not spawned (%s=1)", FORK_ENV)


# ---- tokenizer manager and API routes: the request parameters ----


def decode_sampling_params(original, value):
    """/generate's contract: check explore and explore_group here, before a stream starts
    (a contract error is an HTTP 400), then let the contract see the rest."""
    if isinstance(value, dict):
        try:
            check_custom_params(value.get("custom_params"))
            if any(k in value for k in REQUEST_KEYS):
                check_request(value.get("explore"), value.get("explore_group"), flags.current(), value.get("stratified"))
        except ValueError as exc:
            raise JsonContractError(str(exc)) from None
        value = {k: v for k, v in value.items() if k not in REQUEST_KEYS}
    return original(value)


def tokenizer_manager_init(result, manager, *args, **kwargs):
    base = manager.sampling_params_class
    cfg = manager.esamp_config = flags.current()
    dp_size = manager.server_args.dp_size
    manager.esamp_router = DPRouter(dp_size, cfg) if cfg is not None and dp_size > 1 else None

    def make_sampling_params(**kwargs):
        scope = kwargs.pop(SCOPE_KEY, None)
        check_custom_params(kwargs.get("custom_params"))
        spec = parse_request(kwargs.pop("explore", None), kwargs.pop("explore_group", None), cfg, scope,
                             kwargs.pop("stratified", None), kwargs.get("n") or 1)
        params = base(**kwargs)
        if spec is not None:
            params.custom_params = dict(params.custom_params or {}) | {CUSTOM_KEY: spec}
        return params

    manager.sampling_params_class = make_sampling_params


def generate_request(manager, obj, request=None, *args, **kwargs):
    """With --esamp-scope-header, the header's value rides in the request's sampling params
    (under a key no client can send: /generate's contract refuses unknown keys, the OpenAI
    routes copy only known ones) to ``make_sampling_params`` and the DP router."""
    cfg = getattr(manager, "esamp_config", None)
    if cfg is None or not cfg.scope_header or not hasattr(obj, "sampling_params"):
        return
    scope = request.headers.get(cfg.scope_header) if request is not None else None
    obj.sampling_params = with_scope(obj.sampling_params, scope)


def tokenized_request(manager, obj, input_text, input_ids, *args, **kwargs):
    """With --dp-size > 1, one prompt of an ESamp request (a batch's entries each on their own)
    gets its group's DP rank, from its token ids (``routing.py``), before SGLang copies it into
    its n samples. A rank the client chose (``routed_dp_rank``, or the deprecated spelling that
    SGLang has mapped to it by now) is kept."""
    router = getattr(manager, "esamp_router", None)
    if router is not None and getattr(obj, "routed_dp_rank", 0) is None and hasattr(obj, "sampling_params"):
        obj.routed_dp_rank = router.dp_rank(obj.sampling_params, input_ids)


def validate_token_ids(manager, obj, input_ids, *args, **kwargs):
    """Every request's token ids, given or tokenized, before it reaches the scheduler: an id
    outside [0, vocab) would index past the model's embedding there and take the whole server
    down, so it is refused here (a ValueError: HTTP 400), with or without explore. Multimodal
    prompts are left to SGLang, whose placeholder ids are not vocabulary ids."""
    if not input_ids or obj.contains_mm_input():
        return
    vocab = manager.model_config.vocab_size
    if min(input_ids) < 0 or max(input_ids) >= vocab:
        bad = next(t for t in input_ids if not 0 <= t < vocab)
        raise ValueError(f"input_ids holds the token id {bad}, outside the model's vocabulary [0, {vocab}); "
                         f"send ids from 0 to {vocab - 1}")


def openai_extra_fields(result, *args, **kwargs):
    """Copy explore/explore_group from an OpenAI request body into its sampling params,
    checked before any response starts."""
    request = next(a for a in args if hasattr(a, "model_extra"))
    result.update({k: v for k, v in (request.model_extra or {}).items() if k in REQUEST_KEYS})
    check_custom_params(result.get("custom_params"))
    if any(k in result for k in REQUEST_KEYS):
        check_request(result.get("explore"), result.get("explore_group"), flags.current(), result.get("stratified"))
    return result


def update_request_meta_info(result, manager, meta_info, *args, **kwargs):
    """SGLang sends customized info as lists, and an empty one for the other requests of a
    batch: show one object, and nothing for requests without ESamp."""
    value = meta_info.get("esamp")
    if isinstance(value, list):
        if value:
            meta_info["esamp"] = value[-1]
        else:
            del meta_info["esamp"]


def openai_response_metadata(response, serving, request, ret, *args, **kwargs):
    """A non-streaming OpenAI response carries ESamp's metadata where SGLang puts its own
    extensions: ``sglext.esamp``, the choice's object for one choice, else a list aligned
    with ``choices`` (null for a choice sampled without explore)."""
    metas = [item["meta_info"].get("esamp") for item in ret]
    if not hasattr(response, "sglext") or not any(metas):
        return response
    from sglang.srt.entrypoints.openai.protocol import SglExt

    ext = response.sglext.model_dump(exclude_none=True) if response.sglext is not None else {}
    response.sglext = SglExt(**ext, esamp=metas if len(metas) > 1 else metas[0])
    return response


def allow_openai_extras() -> None:
    from sglang.srt.entrypoints.openai import protocol

    for model in (protocol.CompletionRequest, protocol.ChatCompletionRequest, protocol.SglExt):
        model.model_config["extra"] = "allow"
        model.model_rebuild(force=True)
    for model in vars(protocol).values():  # the responses embed SglExt's schema: rebuild them around the new one
        if isinstance(model, type) and issubclass(model, protocol.BaseModel) and "sglext" in getattr(model, "model_fields", {}):
            model.model_rebuild(force=True)


# ---- scheduler: the model runner and the requests ----


def init_attention_backends(runner, *args, **kwargs):
    global _RUNTIME
    cfg = flags.current()
    if cfg is not None and _RUNTIME is None and not getattr(runner, "is_draft_worker", False):
        _RUNTIME = ESampRuntime.from_runner(runner, cfg)
        _RUNTIME.metrics = ESampMetrics(_METRIC_LABELS) if _METRIC_LABELS is not None else None


def kv_cache_budget(original, configurator, *args, **kwargs):
    """SGLang's KV-cache budget in bytes, less what ESamp will hold on the device (built
    after the pool): the pool is sized around it, instead of ESamp running out of memory
    under load."""
    budget = original(configurator, *args, **kwargs)
    cfg = flags.current()
    if cfg is None or configurator.is_draft_worker:
        return budget
    from sglang.srt.runtime_context import get_parallel

    mc = configurator.model_config
    parts = {**reserved_bytes(cfg, mc.hidden_size, mc.dtype, get_parallel().tp_size, mc.vocab_size), **step_bytes()}
    reserved = sum(parts.values())
    if reserved >= budget:
        raise ValueError(f"ESamp needs {reserved / 2**20:.0f} MiB on the device ({_show(parts)}) but the KV cache's whole budget "
                         f"is {budget / 2**20:.0f} MiB: lower --esamp-max-groups or raise --mem-fraction-static")
    logger.info("ESamp reserves %.1f MiB on the device (%s): KV-cache budget %.1f MiB -> %.1f MiB", reserved / 2**20,
                _show(parts), budget / 2**20, (budget - reserved) / 2**20)
    return budget - reserved


def _show(parts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in parts.items())


def init_metrics_collector(result, scheduler, *args, **kwargs):
    """Runs before the model loads: keep SGLang's labels for ESamp's series."""
    global _METRIC_LABELS
    context = getattr(scheduler, "metrics_collector_context", None)
    collector = getattr(scheduler, "metrics_collector", None)
    if collector is not None and getattr(context, "current_scheduler_metrics_enabled", False):
        _METRIC_LABELS = dict(collector.labels)


def server_capture_mode(original):
    """At least LAST while ESamp runs: for every batch, and for the decode CUDA graphs, which
    are captured in the server's mode (a batch needing more than its graph runs eagerly)."""
    mode = original()
    if _RUNTIME is None:
        return mode
    from sglang.srt.model_executor.forward_batch_info import CaptureHiddenMode

    return max(mode, CaptureHiddenMode.LAST)


def forward_batch_init_new(result, cls, batch, *args, **kwargs):
    if _RUNTIME is not None:
        result.esamp = _RUNTIME.new_step(batch.reqs)
    return result


def model_runner_forward(original, runner, forward_batch, *args, **kwargs):
    if _RUNTIME is None:
        return original(runner, forward_batch, *args, **kwargs)
    with _RUNTIME.forward(forward_batch):
        return original(runner, forward_batch, *args, **kwargs)


def hidden_states_to_store(original, processor, hidden_states, hidden_states_before_norm, aux_hidden_states,
                           pruned_states, pruned_states_before_norm, aux_pruned_states, sample_indices, logits_metadata):
    out = original(processor, hidden_states, hidden_states_before_norm, aux_hidden_states, pruned_states,
                   pruned_states_before_norm, aux_pruned_states, sample_indices, logits_metadata)
    if _RUNTIME is None:
        return out
    return _RUNTIME.store_hidden_states(processor, out, hidden_states, aux_hidden_states, pruned_states, sample_indices, logits_metadata)


def sample(original, runner, logits_output, forward_batch):
    if _RUNTIME is None:
        return original(runner, logits_output, forward_batch)
    return _RUNTIME.sample(lambda lo, fb: original(runner, lo, fb), logits_output, forward_batch)


def preprocess_logits(result, runner, logits_output, *args, **kwargs):
    if _RUNTIME is not None:
        _RUNTIME.apply_tilt(logits_output)


def sample_from_probs(original, sampler, probs, sampling_info, positions, simple_sampling_case):
    if _RUNTIME is None:
        return original(sampler, probs, sampling_info, positions, simple_sampling_case)
    return _RUNTIME.draw(functools.partial(original, sampler), probs, sampling_info, positions, simple_sampling_case)


def create_generation_req(req, scheduler, *args, **kwargs):
    if _RUNTIME is not None:
        _RUNTIME.attach(req)
    return req


def stream_output(streamer, reqs, *args, **kwargs):
    if _RUNTIME is not None:
        for req in reqs:
            if req.finished():
                _RUNTIME.finish(req, with_metadata=True)


def is_request_level_key(original, streamer, key):
    return key == "esamp" or original(streamer, key)


def send_abort_output(scheduler, abort_req, req):
    if _RUNTIME is not None:
        _RUNTIME.finish(req, with_metadata=False)


def maybe_sleep_on_idle(original, scheduler):
    if _RUNTIME is not None and _RUNTIME.idle():
        return None  # the base trained for a slice; the loop comes straight back
    return original(scheduler)


def parallel_group_on_cpu(original, *args, **kwargs):
    """SGLang 0.5.23 builds an NCCL communicator for every parallel group of more than one
    rank, CPU engine included, where it fails (no CUDA device): on a machine without CUDA the
    groups use torch.distributed's gloo backend alone."""
    import torch

    if not torch.cuda.is_available():
        kwargs.update(use_pynccl=False, use_custom_allreduce=False, use_mscclpp=False, use_torch_symm_mem_allreduce=False)
    return original(*args, **kwargs)


def get_internal_state(result, scheduler, *args, **kwargs):
    if _RUNTIME is not None and hasattr(result, "internal_state"):
        result.internal_state["esamp"] = _RUNTIME.server_stats()
    return result


S = "sglang.srt."
HOOKS = [
    (S + "server_args.ServerArgs.add_cli_args", add_cli_args, HookType.AFTER),
    (S + "server_args.prepare_server_args", prepare_server_args, HookType.AROUND),
    (S + "entrypoints.engine._set_envs_and_config", set_envs_and_config, HookType.AFTER),
    ("sglang.api.v1.api_types.decode_SamplingParams", decode_sampling_params, HookType.AROUND),
    (S + "managers.tokenizer_manager.TokenizerManager.__init__", tokenizer_manager_init, HookType.AFTER),
    (S + "managers.tokenizer_manager.TokenizerManager.generate_request", generate_request, HookType.BEFORE),
    (S + "managers.tokenizer_manager.TokenizerManager._validate_one_request", validate_token_ids, HookType.BEFORE),
    (S + "managers.tokenizer_manager.TokenizerManager._create_tokenized_object", tokenized_request, HookType.BEFORE),
    (S + "entrypoints.openai.serving_completions.OpenAIServingCompletion._build_sampling_params", openai_extra_fields,
     HookType.AFTER),
    (S + "entrypoints.openai.protocol.ChatCompletionRequest.to_sampling_params", openai_extra_fields, HookType.AFTER),
    (S + "managers.tokenizer_manager.TokenizerManager.update_request_meta_info", update_request_meta_info, HookType.AFTER),
    (S + "entrypoints.openai.serving_completions.OpenAIServingCompletion._build_completion_response", openai_response_metadata,
     HookType.AFTER),
    (S + "entrypoints.openai.serving_chat.OpenAIServingChat._build_chat_response", openai_response_metadata, HookType.AFTER),
    (S + "mem_cache.kv_cache_configurator.KVCacheConfigurator._profile_available_bytes", kv_cache_budget, HookType.AROUND),
    (S + "model_executor.model_runner.ModelRunner.init_attention_backends", init_attention_backends, HookType.BEFORE),
    (S + "model_executor.forward_batch_info.get_server_return_hidden_states_mode", server_capture_mode, HookType.AROUND),
    (S + "model_executor.forward_batch_info.ForwardBatch.init_new", forward_batch_init_new, HookType.AFTER),
    (S + "layers.logits_processor.LogitsProcessor._get_hidden_states_to_store", hidden_states_to_store, HookType.AROUND),
    (S + "model_executor.model_runner.ModelRunner.forward", model_runner_forward, HookType.AROUND),
    (S + "model_executor.model_runner.ModelRunner.sample", sample, HookType.AROUND),
    (S + "model_executor.model_runner.ModelRunner._preprocess_logits", preprocess_logits, HookType.AFTER),
    (S + "layers.sampler.Sampler._sample_from_probs", sample_from_probs, HookType.AROUND),
    (S + "managers.scheduler.Scheduler._create_generation_req", create_generation_req, HookType.AFTER),
    (S + "managers.scheduler_components.output_streamer.SchedulerOutputStreamer.stream_output", stream_output, HookType.BEFORE),
    (S + "managers.scheduler_components.output_streamer.SchedulerOutputStreamer.is_request_level_customized_info_key",
     is_request_level_key, HookType.AROUND),
    (S + "managers.scheduler.Scheduler.send_abort_output", send_abort_output, HookType.BEFORE),
    (S + "managers.scheduler.Scheduler.maybe_sleep_on_idle", maybe_sleep_on_idle, HookType.AROUND),
    (S + "managers.scheduler.Scheduler.get_internal_state", get_internal_state, HookType.AFTER),
    (S + "managers.scheduler.Scheduler.init_metrics_collector", init_metrics_collector, HookType.AFTER),
    (S + "distributed.parallel_state.init_model_parallel_group", parallel_group_on_cpu, HookType.AROUND),
]


def install() -> None:
    for target, fn, kind in HOOKS:
        HookRegistry.register(target, fn, kind)
    allow_openai_extras()
