"""Write tests/data/tiny_models.json + tiny_inputs.safetensors: the tiny configs and call arguments of
diffusers' transformer classes, taken from the diffusers repository's own model tests.

    python scripts/tiny_models_from_diffusers_tests.py DIFFUSERS_CHECKOUT tests/data

DIFFUSERS_CHECKOUT is a checkout of github.com/huggingface/diffusers matching the installed version
(its tests/models/transformers/*: each TesterConfig's get_init_dict / get_dummy_inputs). Random
float tensors are stored as shapes (tests/_tiny_classes.py draws them), integer and structured
tensors exactly. Run once when diffusers is upgraded; needs no network.
"""
import importlib
import inspect
import json
import os
import sys
import warnings

import torch
from safetensors.torch import save_file
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
d = sys.argv[1] + "/tests/models/transformers"
SKIP = {"LuminaNextDiT2DModel", "Cosmos3OmniTransformer", "WanAnimate2Transformer3DModel",
        "TransformerTemporalModel", "AnyFlowFARTransformer3DModel"}
tensors, out = {}, {}
def enc(x, prefix):
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() and x.numel() > 64 and not bool((x == x.round()).all()):
            return {"randn": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
        key = f"{prefix}"
        tensors[key] = x.detach().contiguous().clone()
        return {"tensor": key}
    if isinstance(x, (list, tuple)):
        return {"list" if isinstance(x, list) else "tuple": [enc(v, f"{prefix}.{i}") for i, v in enumerate(x)]}
    if isinstance(x, dict):
        return {"dict": {str(k): enc(v, f"{prefix}.{k}") for k, v in x.items()}, "int_keys": all(isinstance(k, int) for k in x)}
    if x is None or isinstance(x, (int, float, bool, str)):
        return {"value": x}
    raise TypeError(type(x))
def jsonable(v):
    if isinstance(v, (tuple, list)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return v
for f in sorted(os.listdir(d)):
    if not f.startswith("test_") or f == "test_models_prior.py":
        continue
    mod = importlib.import_module(f"tests.models.transformers.{f[:-3]}")
    for cname, c in vars(mod).items():
        if not (inspect.isclass(c) and cname.endswith("TesterConfig") and c.__module__ == mod.__name__):
            continue
        try:
            obj = c()
            cls = obj.model_class
            init = obj.get_init_dict()
        except Exception:  # noqa: BLE001 - a tester config this diffusers cannot build is skipped
            continue
        name = cls.__name__
        if name in out or name in SKIP:
            continue
        inputs = obj.get_dummy_inputs()
        out[name] = {"init": jsonable(init), "inputs": enc(inputs, name)}
        print(name)
json.dump(out, open(sys.argv[2] + "/tiny_models.json", "w"), indent=1, sort_keys=True)
save_file(tensors, sys.argv[2] + "/tiny_inputs.safetensors")
