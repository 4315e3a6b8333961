"""Load OpenAI's released dVAE (`encoder.pkl`, `decoder.pkl`) without the `dall_e` package.

The files are whole pickled modules. They are read with a restricted unpickler: tensors, parameters
and ordered dicts are rebuilt; every module class (dall_e's and torch.nn's) becomes an inert stub
that only holds its attributes; any other global is refused. No code from the file runs. The
parameters are then copied into our `DVAE`, whose names match (see dvae.py).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from dalle_eval.model.dvae import DVAE

from dalle_eval.config import DVAEConfig
from dalle_eval.errors import DalleEvalError

_ALLOWED = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "device"),
    ("torch", "Size"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("builtins", "set"),
    ("__builtin__", "set"),  # protocol-2 pickles name builtins the Python 2 way
    ("__builtin__", "object"),
}
_STUB_MODULES = ("dall_e.", "torch.nn.modules.", "functools")


class _Stub:
    """Stands in for a pickled module object: keeps its state, has no behaviour."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module.startswith(_STUB_MODULES):
            return type(name, (_Stub,), {"__module__": "openai_dvae_stub"})
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from an OpenAI dVAE pickle")


class _RestrictedPickle:  # the `pickle_module` torch.load expects
    Unpickler = _RestrictedUnpickler
    load = staticmethod(lambda f, **kw: _RestrictedUnpickler(f, **kw).load())
    __name__ = "restricted_pickle"


def _load_params(path: Path) -> dict[str, torch.Tensor]:
    """-> {dotted parameter name: tensor} of a pickled module."""
    if not Path(path).exists():
        raise DalleEvalError(
            f"{path}: not found — download OpenAI's encoder.pkl / decoder.pkl (the dall_e release) to local files"
        )
    try:
        root = torch.load(path, map_location="cpu", pickle_module=_RestrictedPickle, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise DalleEvalError(f"{path}: not an OpenAI dVAE pickle ({e})") from None
    params: dict[str, torch.Tensor] = {}

    def walk(obj, prefix: str) -> None:
        for name, p in getattr(obj, "_parameters", {}).items():
            if p is not None:
                params[prefix + name] = p.detach().clone()
        for name, child in getattr(obj, "_modules", {}).items():
            walk(child, f"{prefix}{name}.")

    walk(root, "")
    return params


def _config_from_params(enc: dict[str, torch.Tensor], dec: dict[str, torch.Tensor]) -> DVAEConfig:
    """Sizes read off the parameter shapes and names (no reliance on the pickled attributes)."""
    groups = {k.split(".")[1] for k in enc if k.startswith("blocks.group_")}
    blocks = {k.split(".")[2] for k in enc if k.startswith("blocks.group_1.block_")}
    return DVAEConfig(
        image_size=256,
        vocab_size=enc["blocks.output.conv.w"].shape[0],
        group_count=len(groups),
        n_hid=enc["blocks.input.w"].shape[0],
        n_blk_per_group=len(blocks),
        n_init=dec["blocks.input.w"].shape[0],
        input_channels=enc["blocks.input.w"].shape[1],
    )


def load_openai_dvae(encoder_path: str | Path, decoder_path: str | Path) -> DVAE:
    """OpenAI's released dVAE as our `DVAE` (weights copied bit-exactly; sizes read from the files)."""
    enc = _load_params(Path(encoder_path))
    dec = _load_params(Path(decoder_path))
    try:
        cfg = _config_from_params(enc, dec)
    except KeyError as e:
        raise DalleEvalError(f"{encoder_path} / {decoder_path}: no parameter {e}; not dall_e's Encoder/Decoder") from None
    model = DVAE(cfg)
    for part, state, path in ((model.encoder, enc, encoder_path), (model.decoder, dec, decoder_path)):
        try:
            part.load_state_dict(state)
        except RuntimeError as e:
            raise DalleEvalError(f"{path}: parameters do not fit the dVAE ({str(e).splitlines()[0]})") from None
    return model.eval()
