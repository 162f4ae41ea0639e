"""Every place where sglang-esamp hooks into SGLang 0.5.23, in one table.

Each hook is thin: it adapts SGLang's call to the ESamp pieces and returns. The process it
matters in is noted; all are registered in every process (it costs nothing elsewhere).

| hooked path                                           | type   | why                                      |
| ----------------------------------------------------- | ------ | ---------------------------------------- |
| server_args.ServerArgs.add_cli_args                   | AFTER  | --enable-esamp and --esamp-* flags        |
| server_args.prepare_server_args                       | AROUND | export the flags' config to children      |
| api_types.decode_SamplingParams                       | AROUND | /generate contract accepts explore keys   |
| TokenizerManager.__init__                             | AFTER  | validate explore, carry it in custom_params |
| OpenAIServingCompletion._build_sampling_params        | AFTER  | explore from the /v1/completions body     |
| ChatCompletionRequest.to_sampling_params              | AFTER  | explore from the /v1/chat body            |
| TokenizerManager.update_request_meta_info             | AFTER  | meta_info["esamp"] as one object          |
| ModelRunner.init_attention_backends                   | BEFORE | capture layer output, build the runtime   |
| forward_batch_info.get_server_return_hidden_states_mode | AROUND | LAST capture, CUDA graphs included      |
| ForwardBatch.init_new                                 | AFTER  | rows -> requests                          |
| LogitsProcessor._get_hidden_states_to_store           | AROUND | keep the LM-head input beside layer 0's; fit new groups on their prompt; predict, mix the tilt into it |
| LogitsProcessor._get_logits                           | AROUND | the LM head reads the mixed state         |
| ModelRunner.forward                                   | AROUND | the batch's requests, for the head hooks  |
| ModelRunner.sample                                    | AROUND | predict, sample, train                    |
| ModelRunner._preprocess_logits                        | AFTER  | tilt, after penalties, grammar and bias   |
| Scheduler._create_generation_req                      | AFTER  | a request joins its group                 |
| SchedulerOutputStreamer.stream_output                 | BEFORE | finished requests: metadata, release      |
| SchedulerOutputStreamer.is_request_level_customized_info_key | AROUND | "esamp" is sent once      |
| Scheduler.send_abort_output                           | BEFORE | aborted queued requests release           |
| Scheduler.get_internal_state                          | AFTER  | ESamp counters in /get_server_info        |

The OpenAI request models also get ``extra="allow"`` so that ``explore`` survives parsing.
"""

from __future__ import annotations

import logging

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from . import flags
from .params import CUSTOM_KEY, parse_request

logger = logging.getLogger(__name__)

_RUNTIME = None  # the ESampRuntime of this scheduler process, once the model is loaded
REQUEST_KEYS = ("explore", "explore_group")


def runtime():
    return _RUNTIME


# ---- launcher: flags ----


def add_cli_args(result, parser):
    flags.add_arguments(parser)


def prepare_server_args(original, argv):
    cfg = flags.parse(argv)
    flags.export(cfg)
    return original(argv)


# ---- tokenizer manager: the request parameters ----


def decode_sampling_params(original, value):
    if isinstance(value, dict) and any(k in value for k in REQUEST_KEYS):
        value = {k: v for k, v in value.items() if k not in REQUEST_KEYS}
    return original(value)


def tokenizer_manager_init(result, manager, *args, **kwargs):
    base = manager.sampling_params_class
    cfg = flags.current()

    def make_sampling_params(**kwargs):
        spec = parse_request(kwargs.pop("explore", None), kwargs.pop("explore_group", None), cfg)
        params = base(**kwargs)
        if spec is not None:
            params.custom_params = dict(params.custom_params or {}) | {CUSTOM_KEY: spec}
        return params

    manager.sampling_params_class = make_sampling_params


def openai_extra_fields(result, *args, **kwargs):
    """Copy explore/explore_group from an OpenAI request body into its sampling params."""
    request = next(a for a in args if hasattr(a, "model_extra"))
    for key in REQUEST_KEYS:
        if request.model_extra and key in request.model_extra:
            result[key] = request.model_extra[key]
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


def allow_openai_extras() -> None:
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest, CompletionRequest

    for model in (CompletionRequest, ChatCompletionRequest):
        model.model_config["extra"] = "allow"
        model.model_rebuild(force=True)


# ---- scheduler: the model runner and the requests ----


def init_attention_backends(runner, *args, **kwargs):
    global _RUNTIME
    cfg = flags.current()
    if cfg is None or _RUNTIME is not None or getattr(runner, "is_draft_worker", False):
        return
    from .state import ESampRuntime

    from sglang.srt.runtime_context import get_parallel

    if get_parallel().tp_size > 1:
        raise ValueError("ESamp does not support tensor parallelism (tp > 1) yet; see docs/server.md")
    model = runner.model
    if not hasattr(model, "set_eagle3_layers_to_capture"):
        raise ValueError(f"ESamp needs hidden-state capture, which {type(model).__name__} does not support")
    num_layers = model.config.num_hidden_layers
    if cfg.source_layer >= num_layers - 1:
        raise ValueError(f"--esamp-source-layer must be below {num_layers - 1} for this model; got {cfg.source_layer}")
    model.set_eagle3_layers_to_capture([cfg.source_layer])
    model.logits_processor.esamp_capture = True
    norm = getattr(getattr(model, "model", None), "norm", None)
    stop_ids = sorted(getattr(runner.model_config, "hf_eos_token_id", None) or [])
    base = None
    if cfg.calibrated:
        from ..calibrate import load_or_calibrate

        base, path = load_or_calibrate(runner.model_config.model_path, cfg)
        logger.info("ESamp: new groups start from the calibrated base %s (held-out rel_err %.3f)", path, base.rel_err)
    _RUNTIME = ESampRuntime(
        cfg, model.config.hidden_size, model.lm_head.weight, getattr(norm, "weight", None), runner.device, stop_ids,
        base=None if base is None else base.params, vocab_size=runner.model_config.vocab_size,
    )


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
        result.esamp_reqs = list(batch.reqs)
    return result


def model_runner_forward(original, runner, forward_batch, *args, **kwargs):
    """Hands the batch's requests to the LM-head hooks below for the length of one forward
    (the eager runner passes the model a copy of the batch, without them). A replayed CUDA
    graph never calls those hooks."""
    if _RUNTIME is None:
        return original(runner, forward_batch, *args, **kwargs)
    _RUNTIME.begin_forward(forward_batch)
    try:
        return original(runner, forward_batch, *args, **kwargs)
    finally:
        _RUNTIME.end_forward()


def hidden_states_to_store(original, processor, hidden_states, hidden_states_before_norm, aux_hidden_states,
                           pruned_states, pruned_states_before_norm, aux_pruned_states, sample_indices, logits_metadata):
    out = original(processor, hidden_states, hidden_states_before_norm, aux_hidden_states, pruned_states,
                   pruned_states_before_norm, aux_pruned_states, sample_indices, logits_metadata)
    if not getattr(processor, "esamp_capture", False) or out is None or not logits_metadata.capture_hidden_mode.is_last():
        return out
    import torch

    if _RUNTIME is not None and _RUNTIME.prompt_pending and aux_hidden_states is not None and logits_metadata.forward_mode.is_extend():
        from sglang.srt.layers.aux_hidden_states import pack_aux_hidden_states

        _RUNTIME.fit_prompts(pack_aux_hidden_states(aux_hidden_states), hidden_states)  # every prefilled token
    final = pruned_states[sample_indices] if sample_indices is not None else pruned_states  # (rows, D)
    # the next head call reads pruned_states, one row per request, with no rescaling of its logits
    plain_head = sample_indices is None and processor.logit_scale is None and not processor.final_logit_softcapping
    if _RUNTIME is not None and plain_head and not logits_metadata.extend_return_logprob:
        _RUNTIME.prepare(out, pruned_states)
    return torch.cat([out, final.to(out.dtype)], dim=-1)  # (rows, 2D): layer output | LM-head input


def get_logits(original, processor, hidden_states, *args, **kwargs):
    """The LM head on the mixed state that ``prepare`` built for this very input, if any."""
    if _RUNTIME is not None and _RUNTIME.prepared is not None:
        logits = _RUNTIME.latent_logits(lambda mixed: original(processor, mixed, *args, **kwargs), hidden_states)
        if logits is not None:
            return logits
    return original(processor, hidden_states, *args, **kwargs)


def sample(original, runner, logits_output, forward_batch):
    reqs = getattr(forward_batch, "esamp_reqs", None)
    if _RUNTIME is None or not reqs:
        return original(runner, logits_output, forward_batch)
    return _RUNTIME.step(lambda lo, fb: original(runner, lo, fb), logits_output, forward_batch, reqs)


def preprocess_logits(result, runner, logits_output, *args, **kwargs):
    if _RUNTIME is not None:
        _RUNTIME.apply_tilt(logits_output)


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


def get_internal_state(result, scheduler, *args, **kwargs):
    if _RUNTIME is not None and hasattr(result, "internal_state"):
        result.internal_state["esamp"] = _RUNTIME.server_stats()
    return result


S = "sglang.srt."
HOOKS = [
    (S + "server_args.ServerArgs.add_cli_args", add_cli_args, HookType.AFTER),
    (S + "server_args.prepare_server_args", prepare_server_args, HookType.AROUND),
    ("sglang.api.v1.api_types.decode_SamplingParams", decode_sampling_params, HookType.AROUND),
    (S + "managers.tokenizer_manager.TokenizerManager.__init__", tokenizer_manager_init, HookType.AFTER),
    (S + "entrypoints.openai.serving_completions.OpenAIServingCompletion._build_sampling_params", openai_extra_fields, HookType.AFTER),
    (S + "entrypoints.openai.protocol.ChatCompletionRequest.to_sampling_params", openai_extra_fields, HookType.AFTER),
    (S + "managers.tokenizer_manager.TokenizerManager.update_request_meta_info", update_request_meta_info, HookType.AFTER),
    (S + "model_executor.model_runner.ModelRunner.init_attention_backends", init_attention_backends, HookType.BEFORE),
    (S + "model_executor.forward_batch_info.get_server_return_hidden_states_mode", server_capture_mode, HookType.AROUND),
    (S + "model_executor.forward_batch_info.ForwardBatch.init_new", forward_batch_init_new, HookType.AFTER),
    (S + "layers.logits_processor.LogitsProcessor._get_hidden_states_to_store", hidden_states_to_store, HookType.AROUND),
    (S + "layers.logits_processor.LogitsProcessor._get_logits", get_logits, HookType.AROUND),
    (S + "model_executor.model_runner.ModelRunner.forward", model_runner_forward, HookType.AROUND),
    (S + "model_executor.model_runner.ModelRunner.sample", sample, HookType.AROUND),
    (S + "model_executor.model_runner.ModelRunner._preprocess_logits", preprocess_logits, HookType.AFTER),
    (S + "managers.scheduler.Scheduler._create_generation_req", create_generation_req, HookType.AFTER),
    (S + "managers.scheduler_components.output_streamer.SchedulerOutputStreamer.stream_output", stream_output, HookType.BEFORE),
    (S + "managers.scheduler_components.output_streamer.SchedulerOutputStreamer.is_request_level_customized_info_key", is_request_level_key, HookType.AROUND),
    (S + "managers.scheduler.Scheduler.send_abort_output", send_abort_output, HookType.BEFORE),
    (S + "managers.scheduler.Scheduler.get_internal_state", get_internal_state, HookType.AFTER),
]


def install() -> None:
    for target, fn, kind in HOOKS:
        HookRegistry.register(target, fn, kind)
    allow_openai_extras()
