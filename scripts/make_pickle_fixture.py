#!/usr/bin/env python3
"""Writes tests/fixtures/hub/tiny_pytorch_model.bin for tests/hub_pytorch_bin.rs.

Generated with torch==2.15.0 (CPU), default torch.save settings (zip format,
pickle protocol 2). Re-run from the crate root:

    python scripts/make_pickle_fixture.py

The values are tiny and exact in every dtype, so the Rust test can compare
them with ==. Keep this script and the test in step.
"""
from collections import OrderedDict
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hub" / "tiny_pytorch_model.bin"


def main() -> None:
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    sd = OrderedDict()
    sd["a.weight"] = a
    sd["b.bias"] = torch.tensor([1.5, -2.0], dtype=torch.float16)
    sd["c"] = torch.tensor([0, 1, 2], dtype=torch.int64)
    # non-contiguous view sharing a.weight's storage: shape (3, 2), stride (1, 3)
    sd["d.transposed"] = a.t()
    # view with a storage offset: base[1:, 1:] is offset 5; .t() gives shape (3, 2), stride (1, 4)
    sd["e.offset_view"] = base[1:, 1:].t()
    sd["f.bf16"] = torch.tensor([0.5, -1.25, 3.0], dtype=torch.bfloat16)
    # an nn.Parameter pickles via torch._utils._rebuild_parameter
    sd["g.param"] = torch.nn.Parameter(torch.tensor([[1.0, 2.0]]))
    assert not sd["d.transposed"].is_contiguous()
    assert sd["e.offset_view"].storage_offset() == 5
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) with torch {torch.__version__}")
    for k, v in sd.items():
        print(k, v.dtype, tuple(v.shape), v.stride(), v.storage_offset(), v.detach().flatten().tolist())


if __name__ == "__main__":
    main()
