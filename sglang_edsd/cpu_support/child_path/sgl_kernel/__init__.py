"""`sgl_kernel` as SGLang's child processes see it while sglang-edsd CPU support is on.

SGLang's scheduler and detokenizer are spawned processes that import
`sglang.srt.managers.scheduler` (and through it `from sgl_kernel import ..._cpu`) while
unpickling their target, before they run any plugin. multiprocessing's spawn hands the
parent's sys.path to the child before that unpickling, so the parent's CPU-support layer
puts this folder first on sys.path and the child's `import sgl_kernel` lands here. The
CUDA wheel's folder stays on `__path__` (its pure-Python submodules still import) and the
torch-native ops are registered on this module. Never used on a machine with CUDA.
"""

import importlib.machinery as _machinery
import os as _os
import sys as _sys

_here = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
_wheel = _machinery.PathFinder.find_spec("sgl_kernel", [p for p in _sys.path if _os.path.abspath(p or ".") != _here])
if _wheel is not None and _wheel.submodule_search_locations:
    __path__.extend(_wheel.submodule_search_locations)  # noqa: F821 - package __path__

from sglang_edsd.cpu_support.install import install_cpu_ops as _install  # noqa: E402

_install()
