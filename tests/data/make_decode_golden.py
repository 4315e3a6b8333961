"""Writes decode_golden.pt for tests/test_decode_fast.py with the sampler of the installed dalle_eval.

It was run on commit ad69a0e (the sampler before DecodeStep), 1 thread:
    OMP_NUM_THREADS=1 python tests/data/make_decode_golden.py
Only APIs that commit has: the model and the weights are built as the test builds them.
"""

import dataclasses
import platform
from pathlib import Path

import torch
from dalle_eval.model.sampling import completion_keep, sample_codes
from dalle_eval.model.transformer import DalleTransformer

from dalle_eval.config import TransformerConfig

TINY = TransformerConfig(text_len=24, text_vocab=512, image_vocab=128, grid=8, n_layer=4, n_head=4, d_head=48,
                         d_model=192, conv_kernel=5, attention="sparse", attention_backend="sdpa")
SEEDS = list(range(8))


def seeded_model(cfg: TransformerConfig) -> DalleTransformer:
    model = DalleTransformer(cfg).eval()
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def cases(name: str, model: DalleTransformer) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, 512, (8, 24), generator=torch.Generator().manual_seed(7))
    ids[:, 10:] = -1
    text = model.pad_text(ids)
    known = torch.randint(0, 128, (8, 8, 8), generator=torch.Generator().manual_seed(3))
    out = {"text": text, "known": known, "plain": sample_codes(model, text, SEEDS),
           "topk": sample_codes(model, text, SEEDS, temperature=0.7, top_k=16),
           "topp": sample_codes(model, text, SEEDS, top_p=0.9),
           "rows": sample_codes(model, text, SEEDS, known=known, keep=completion_keep(8, keep_rows=3)),
           "region": sample_codes(model, text, SEEDS, top_k=32, known=known, keep=completion_keep(8, region=(5, 6)))}
    codes, cache = out["plain"].flatten(1)[:2], model.new_cache(2)
    with torch.no_grad():  # the decode step's image logits after the prefill and after each later token
        steps = [model.image_logits(text[:2], codes[:, :0], cache)]
        steps += [model.image_logits(None, codes[:, t : t + 1], cache) for t in range(63)]
    out["logits"] = torch.stack(steps, 1)  # (2, 64, 128)
    return {f"{name}_{k}": v for k, v in out.items()}


def machine() -> str:
    """What the golden bits depend on besides the code: the CPU (MKL picks its kernels by the SIMD flags) and torch."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    field = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info) if v}
    simd = ",".join(sorted(f for f in field.get("flags", "").split() if f.startswith(("avx", "amx", "fma"))))
    return f"{field.get('model name', platform.processor())} | {simd} | torch {torch.__version__}"


def main() -> None:
    full = dataclasses.replace(TINY, attention="full", n_layer=2)
    golden = {**cases("sparse", seeded_model(TINY)), **cases("full", seeded_model(full)), "machine": machine()}
    torch.save(golden, Path(__file__).with_name("decode_golden.pt"))


if __name__ == "__main__":
    main()
