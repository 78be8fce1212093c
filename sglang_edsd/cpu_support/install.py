"""Make the torch-native CPU ops reachable where SGLang looks for them.

SGLang reaches each op in one of two ways: `torch.ops.sgl_kernel.<name>` (the intel_amx
attention backend) or `from sgl_kernel import <name>`, run at import time under `is_cpu()`
(the speculative helpers, the KV-cache mover, the allocator).

What `import sgl_kernel` does on a machine without CUDA (sglang-kernel 0.4.10, checked): its
`__init__` loads the package's CUDA library, which needs libcuda.so.1, and raises ImportError.
Python then drops the half-built package from sys.modules (only the pure-Python submodules it
had loaded, such as `sgl_kernel.version`, stay), so every later import fails the same way.
Hence:

* if `sgl_kernel` imports (a CPU build, or a GPU machine) we only add missing attributes to
  the real module and leave everything it has alone;
* if it cannot be imported we register a small shim package in sys.modules in its place, with
  the wheel's folder as `__path__` so its pure-Python submodules still import.

Each op is registered as a real torch op in the `sgl_kernel` namespace (a library fragment,
so it coexists with a loaded native library), with its in-place outputs declared and a fake
implementation, so torch.compile can trace around it; only names the registry does not
have yet are registered. The module attribute is the registered op itself, so both routes run
the same code. Nothing else is registered: in particular not `convert_weight_packed`, whose
presence SGLang reads as "the full AMX kernel set is here" (`cpu_has_amx_support`) and which
would route linear layers and KV writes to ops that do not exist.
"""

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable

import torch

from sglang_edsd.cpu_support import ops

# Op name -> the arguments it writes in place (copy_all_layer_kv_cache_cpu writes through raw
# buffer addresses, which torch cannot see).
_MUTATED_ARGS: dict[str, tuple[str, ...]] = {
    "copy_all_layer_kv_cache_cpu": (),
    "decode_attention_cpu": ("k_buffer", "v_buffer", "output"),
    "extend_attention_cpu": ("o_extend",),
    "build_draft_decode_metadata_cpu": (),
    "assign_draft_cache_locs_contiguous_cpu": ("out_cache_loc",),
    "assign_extend_cache_locs_cpu": ("out_cache_loc",),
    "assign_req_to_token_pool_cpu": ("req_to_token",),
    "fill_bonus_tokens_cpu": ("bonus_tokens",),
    "fill_accept_out_cache_loc_cpu": ("accept_out_cache_loc",),
    "build_tree_kernel_efficient_cpu": (
        "tree_mask",
        "positions",
        "retrive_index",
        "retrive_next_token",
        "retrive_next_sibling",
    ),
    "verify_tree_greedy_cpu": ("predicts", "accept_index", "accept_token_num"),
}
OP_NAMES: tuple[str, ...] = tuple(_MUTATED_ARGS)

_SHIM_DOC = (
    "Stand-in for sgl_kernel, whose CUDA-only wheel cannot be imported here; "
    "holds the torch-native CPU ops of sglang_edsd.cpu_support."
)


def _sgl_kernel_module() -> types.ModuleType:
    """The module `import sgl_kernel` yields: the real one if it imports, else a new shim."""
    try:
        return importlib.import_module("sgl_kernel")
    except ImportError:
        pass
    wheel = importlib.util.find_spec("sgl_kernel")
    shim = types.ModuleType("sgl_kernel", _SHIM_DOC)
    shim.__path__ = list(wheel.submodule_search_locations) if wheel else []
    # A module without a spec makes importlib.util.find_spec("sgl_kernel") raise.
    shim.__spec__ = importlib.machinery.ModuleSpec("sgl_kernel", None, is_package=True)
    shim.__spec__.submodule_search_locations = shim.__path__
    sys.modules["sgl_kernel"] = shim
    return shim


def _fake(name: str) -> Callable[..., torch.Tensor | None]:
    """Shape-only version of an op for torch.compile: ops return nothing, except the one that
    builds a new req_to_token table."""
    if name != "build_draft_decode_metadata_cpu":
        return lambda *args, **kwargs: None

    def fake_table(req_to_token, req_pool_indices, seq_lens, topk, num_steps, pool_len):
        return req_to_token.new_empty(req_pool_indices.shape[0] * topk, pool_len)

    return fake_table


_LIBRARY: torch.library.Library | None = None


def install_cpu_ops() -> list[str]:
    """Make every op reachable as torch.ops.sgl_kernel.<name> and via `from sgl_kernel import
    <name>` in this process; idempotent. Returns the names whose torch-native version it
    registered ([] when the real ops already exist or on a repeat call).

    Each op is defined from its signature (`infer_schema`, in-place outputs declared) and its
    kernel registered for the CPU dispatch key directly: `torch.library.custom_op` would add a
    Python autograd wrapper that cost ~20 us per call, and attention runs once per layer.
    """
    global _LIBRARY
    module = _sgl_kernel_module()
    installed = []
    for name, mutated in _MUTATED_ARGS.items():
        if not hasattr(torch.ops.sgl_kernel, name):
            if _LIBRARY is None:
                _LIBRARY = torch.library.Library("sgl_kernel", "FRAGMENT")
            kernel = getattr(ops, name)
            _LIBRARY.define(name + torch.library.infer_schema(kernel, mutates_args=mutated))
            _LIBRARY.impl(name, kernel, "CPU")
            torch.library.register_fake(f"sgl_kernel::{name}", _fake(name), lib=_LIBRARY)
            installed.append(name)
        if not hasattr(module, name):
            setattr(module, name, getattr(torch.ops.sgl_kernel, name))
    return installed
