"""The EDSD draft model inside SGLang: SGLang's EAGLE-3 draft with EDFuse in place of `fc`.

Built from SGLang's own layers (the EAGLE-3 decoder layer whose qkv takes
[input_layernorm(embeds) | hidden_norm(hidden)], RMSNorm, ParallelLMHead over the draft
vocabulary, LogitsProcessor), so everything SGLang's EAGLE-3 worker does with a draft
(hot-token map, shared target embedding, CUDA-graph buffers) works unchanged.

Draft-decode steps: SGLang's EAGLE-3 feeds the draft's own hidden state (width d) back
and skips `fc`. EDSD does the same: EDFuse runs only in draft-extend, where the two
captured target layers (width 2*d_t) come in; decode steps pass the draft hidden state
straight to the decoder layer, and the token still enters through the layer's own
embedding half. The training model (sglang_edsd.edtrain) makes the identical choice.

EDFuse is sharded over tensor-parallel ranks like SGLang's own MLP (`edfuse_tp.py`); the
checkpoint holds full tensors and each layer's weight loader takes its rank's slice.

Weight loading is strict: every tensor is checked against the draft config's manifest
and a missing, unexpected or mis-shaped tensor stops start-up with its name.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from sglang.srt.layers.layer_boundary import layer_stack
from sglang.srt.layers.layernorm import RMSNorm
from sglang.srt.layers.logits_processor import LogitsProcessor
from sglang.srt.layers.quantization.base_config import QuantizationConfig
from sglang.srt.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, PPProxyTensors
from sglang.srt.model_executor.runner_utils.capture_mode import get_is_capture_mode
from sglang.srt.model_loader.weight_utils import default_weight_loader
from sglang.srt.models.llama_eagle3 import LlamaDecoderLayer as Eagle3DecoderLayer
from sglang.srt.models.llama_eagle3 import LlamaForCausalLMEagle3
from sglang.srt.runtime_context import get_parallel, get_spec, get_stream
from sglang.srt.utils import add_prefix
from torch import nn
from transformers import LlamaConfig

from sglang_edsd.draft_config import EDSDDraftConfig, check_tensor_manifest
from sglang_edsd.serving.draft_recorder import DraftRecorder
from sglang_edsd.serving.edfuse_streams import STREAM_NAME, EDFuseRunner, side_stream_enabled
from sglang_edsd.serving.edfuse_tp import TPEDFuse

# checkpoint shard name -> (fused SGLang parameter, shard id)
_STACKED = {
    ".q_proj": (".qkv_proj", "q"),
    ".k_proj": (".qkv_proj", "k"),
    ".v_proj": (".qkv_proj", "v"),
    ".gate_proj": (".gate_up_proj", 0),
    ".up_proj": (".gate_up_proj", 1),
}


class EDSDModel(nn.Module):
    """Embedding, EDFuse and one EAGLE-3 decoder layer; returns (hidden, [aux hidden])."""

    def __init__(self, config: LlamaConfig, quant_config: QuantizationConfig | None = None, prefix: str = "") -> None:
        super().__init__()
        self.config = config
        draft = EDSDDraftConfig.from_hf_dict(config.to_dict(), source="EDSD draft config")
        self.embed_tokens = VocabParallelEmbedding(
            config.vocab_size, config.hidden_size, prefix=add_prefix("embed_tokens", prefix)
        )
        self.edfuse = TPEDFuse(draft.feature_size, config.hidden_size, draft.expansion_size, draft.token_layernorm)
        # Built here, under SGLang's device context and before any CUDA-graph capture.
        device = self.edfuse.gate.weight.device
        side = get_stream(STREAM_NAME) if device.type == "cuda" and side_stream_enabled() else None
        # SGLang's capture flag is on through its warm-ups and the capture itself, so both take
        # the graph path (Triton's first launch must not happen inside a capture).
        self.edfuse_runner = EDFuseRunner(self.edfuse, device, side, graph_mode=get_is_capture_mode)
        with layer_stack():
            self.layers = nn.ModuleList([Eagle3DecoderLayer(config, 0, quant_config, prefix)])
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: torch.Tensor | None = None,
        pp_proxy_tensors: PPProxyTensors | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        embeds = self.embed_tokens(input_ids) if input_embeds is None else input_embeds
        hidden_states = forward_batch.spec_info.hidden_states
        if hidden_states.shape[-1] != embeds.shape[-1]:
            # Draft-extend: captured target features [h_low | h_high] come in.
            hidden_states = self.edfuse_runner(hidden_states, embeds)
        if hidden_states.shape[0] == 0:
            return hidden_states, [hidden_states]
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(positions, embeds, hidden_states, forward_batch, residual)
        to_logits, to_aux = self.norm(hidden_states, residual)
        return to_logits, [to_aux]


class LlamaForCausalLMEDSD(LlamaForCausalLMEagle3):
    """SGLang entry class for EDSD drafts (architecture name in the draft config.json)."""

    def __init__(self, config: LlamaConfig, quant_config: QuantizationConfig | None = None, prefix: str = "") -> None:
        nn.Module.__init__(self)
        self.config = config
        self.quant_config = quant_config
        self.pp_group = get_parallel().pp_group
        self._draft_window_size: int | None = get_spec().speculative_draft_window_size
        self.model = EDSDModel(config, quant_config, prefix=add_prefix("model", prefix))
        if self._draft_window_size is not None:
            for layer in self.model.layers:
                layer.self_attn.attn.sliding_window_size = self._draft_window_size
        # EDSD drafts always ship their own lm_head over the (pruned) draft vocabulary.
        self.load_lm_head_from_target = False
        self.lm_head = ParallelLMHead(
            config.draft_vocab_size, config.hidden_size, quant_config=quant_config, prefix=add_prefix("lm_head", prefix)
        )
        logits_config = copy.deepcopy(config)
        logits_config.vocab_size = config.draft_vocab_size
        self.logits_processor = LogitsProcessor(logits_config)
        self.capture_aux_hidden_states = True
        self.hot_token_id = None
        self.recorder = DraftRecorder.from_env()

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: torch.Tensor | None = None,
        get_embedding: bool = False,
        pp_proxy_tensors: PPProxyTensors | None = None,
    ):
        hidden_in = forward_batch.spec_info.hidden_states
        out = super().forward(input_ids, positions, forward_batch, input_embeds, get_embedding, pp_proxy_tensors)
        if self.recorder is not None:
            self.recorder.record(forward_batch.forward_mode.name, input_ids, positions, hidden_in, out)
        return out

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        tensors = {name.removeprefix("model."): w for name, w in weights}
        draft = EDSDDraftConfig.from_hf_dict(self.config.to_dict(), source="EDSD draft config")
        check_tensor_manifest(draft, {k: tuple(v.shape) for k, v in tensors.items()}, "EDSD draft weights")
        params = dict(self.named_parameters())
        for name, weight in tensors.items():
            if name == "d2t":
                # d2t holds target_id - draft_id; SGLang maps draft ids through hot_token_id.
                self.hot_token_id = weight.long() + torch.arange(weight.shape[0])
                continue
            if name == "t2d":
                continue
            for shard, (fused, shard_id) in _STACKED.items():
                if shard in name:
                    param = params[self._param_name(name.replace(shard, fused), params)]
                    param.weight_loader(param, weight, shard_id)
                    break
            else:
                param = params[self._param_name(name, params)]
                getattr(param, "weight_loader", default_weight_loader)(param, weight)

    @staticmethod
    def _param_name(name: str, params: dict[str, nn.Parameter]) -> str:
        return name if name in params else f"model.{name}"


EntryClass = [LlamaForCausalLMEDSD]
