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
    """Stands in for a pickled object of a stubbed class: keeps its state, has no behaviour."""

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})

    def __setitem__(self, key, value):  # a stubbed dict subclass (e.g. a pickled defaultdict's items)
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value):  # a stubbed list subclass
        self.__dict__.setdefault("_list", []).append(value)

    extend = lambda self, values: [self.append(v) for v in values]


def _unpickler(stub_modules: tuple[str, ...], what: str) -> type:
    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) in _ALLOWED:
                return super().find_class(module, name)
            if module.startswith(stub_modules):
                return type(name, (_Stub,), {"__module__": "restricted_stub"})
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from {what}")

    return RestrictedUnpickler


def restricted_torch_load(path: Path, stub_modules: tuple[str, ...], what: str):
    """torch.load of a file that may hold pickled objects: tensors and plain containers are rebuilt, classes
    from `stub_modules` become inert stubs that only hold their state, any other global is refused (no code
    from the file runs). Raises pickle.UnpicklingError, RuntimeError or EOFError on a bad file."""
    unpickler = _unpickler(stub_modules, what)

    class RestrictedPickle:  # the `pickle_module` torch.load expects
        __name__ = "restricted_pickle"
        Unpickler = unpickler
        load = staticmethod(lambda f, **kw: unpickler(f, **kw).load())

    return torch.load(path, map_location="cpu", pickle_module=RestrictedPickle, weights_only=False)


def _load_params(path: Path) -> dict[str, torch.Tensor]:
    """-> {dotted parameter name: tensor} of a pickled module."""
    if not Path(path).exists():
        raise DalleEvalError(
            f"{path}: not found — download OpenAI's encoder.pkl / decoder.pkl (the dall_e release) to local files"
        )
    try:
        root = restricted_torch_load(path, _STUB_MODULES, "an OpenAI dVAE pickle")
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


def _config_from_params(enc: dict[str, torch.Tensor], dec: dict[str, torch.Tensor], image_size: int) -> DVAEConfig:
    """Sizes read off the parameter shapes and names (no reliance on the pickled attributes)."""
    groups = {k.split(".")[1] for k in enc if k.startswith("blocks.group_")}
    blocks = {k.split(".")[2] for k in enc if k.startswith("blocks.group_1.block_")}
    return DVAEConfig(
        image_size=image_size,
        vocab_size=enc["blocks.output.conv.w"].shape[0],
        group_count=len(groups),
        n_hid=enc["blocks.input.w"].shape[0],
        n_blk_per_group=len(blocks),
        n_init=dec["blocks.input.w"].shape[0],
        input_channels=enc["blocks.input.w"].shape[1],
    )


def load_openai_dvae(encoder_path: str | Path, decoder_path: str | Path, image_size: int = 256) -> DVAE:
    """OpenAI's released dVAE as our `DVAE` (weights copied bit-exactly; sizes read from the files).

    It is fully convolutional: `image_size` (released: 256 px -> a 32x32 grid of 8192 codes) may be any multiple
    of 2**(group_count - 1) = 8."""
    enc = _load_params(Path(encoder_path))
    dec = _load_params(Path(decoder_path))
    try:
        cfg = _config_from_params(enc, dec, image_size)
    except KeyError as e:
        raise DalleEvalError(f"{encoder_path} / {decoder_path}: no parameter {e}; not dall_e's Encoder/Decoder") from None
    factor = 2 ** (cfg.group_count - 1)
    if image_size % factor:
        raise DalleEvalError(f"image size {image_size} (data.resolution): OpenAI's dVAE needs a multiple of {factor}")
    model = DVAE(cfg)
    for part, state, path in ((model.encoder, enc, encoder_path), (model.decoder, dec, decoder_path)):
        try:
            part.load_state_dict(state)
        except RuntimeError as e:
            raise DalleEvalError(f"{path}: parameters do not fit the dVAE ({str(e).splitlines()[0]})") from None
    return model.eval()
