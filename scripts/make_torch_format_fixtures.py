#!/usr/bin/env python3
"""Writes the tiny torch-format fixtures read by tests/hub_torch_formats.rs:

* tests/fixtures/hub/tiny_legacy.pth: torch.save(..., _use_new_zipfile_serialization=False),
  the legacy (pre-1.6, non-zip) format, of a dict wrapping a DataParallel-style
  state_dict: {"model_state_dict": {"module.<name>": tensor}, "epoch": 7};
* tests/fixtures/hub/tiny_torchscript.pt: torch.jit.save of a small scripted module
  (nested modules, a BatchNorm with its buffers, non-tensor attributes);
* tests/fixtures/hub/torch_formats_expected.json: for each file, the state_dict
  keys torch gives (legacy: without the `module.` prefix) with dtype, shape and
  every value.

Generated with torch==2.15.0 (CPU). Re-run from the crate root:

    python scripts/make_torch_format_fixtures.py

Values are small and exact in every dtype, so the Rust test compares with ==.
"""
import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hub"


def describe(sd):
    return {
        k: {
            "dtype": str(v.dtype).replace("torch.", ""),
            "shape": list(v.shape),
            "values": [float(x) for x in v.detach().flatten().tolist()],
        }
        for k, v in sd.items()
    }


def legacy():
    a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    sd = OrderedDict()
    sd["a.weight"] = a
    sd["b.bias"] = torch.tensor([1.5, -2.0], dtype=torch.float16)
    sd["c.num_batches_tracked"] = torch.tensor(3, dtype=torch.int64)
    sd["d.transposed"] = a.t()  # shares a.weight's storage, stride (1, 3)
    sd["e.offset_view"] = base[1:, 1:].t()  # storage offset 5, stride (1, 4)
    sd["f.bf16"] = torch.tensor([0.5, -1.25, 3.0], dtype=torch.bfloat16)
    sd["g.f64"] = torch.tensor([[0.25], [-4.0]], dtype=torch.float64)
    sd["h.param"] = nn.Parameter(torch.tensor([[1.0, 2.0]]))
    # channels-last conv weight, as some vision checkpoints store them
    sd["i.conv"] = torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2).contiguous(
        memory_format=torch.channels_last
    )
    assert not sd["i.conv"].is_contiguous()
    wrapped = {"model_state_dict": OrderedDict(("module." + k, v) for k, v in sd.items()), "epoch": 7}
    path = OUT / "tiny_legacy.pth"
    torch.save(wrapped, path, _use_new_zipfile_serialization=False)
    with open(path, "rb") as f:
        assert f.read(2) == b"\x80\x02", "expected the legacy format"
    return path, sd


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.kernel = [1, 1]  # a non-tensor attribute (an int list)

    def forward(self, x):
        return self.bn(self.conv(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(Block(), nn.ReLU())
        self.head = nn.Linear(3, 2)
        self.scale = 0.5
        self.register_buffer("offsets", torch.tensor([1, 2, 3], dtype=torch.int64))

    def forward(self, x):
        y = self.layers(x).mean(dim=(2, 3))
        return self.head(y) * self.scale


def torchscript():
    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            n = p.numel()
            p.copy_(torch.arange(n, dtype=torch.float32).reshape(p.shape) * 0.5 - i)
        bn = net.layers[0].bn
        bn.running_mean.copy_(torch.tensor([0.5, -0.5, 1.0]))
        bn.running_var.copy_(torch.tensor([1.0, 2.0, 4.0]))
        bn.num_batches_tracked.fill_(11)
    scripted = torch.jit.script(net)
    path = OUT / "tiny_torchscript.pt"
    torch.jit.save(scripted, path)
    loaded = torch.jit.load(path)
    return path, loaded.state_dict()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {}
    for make in (legacy, torchscript):
        path, sd = make()
        expected[path.name] = describe(sd)
        print(f"wrote {path} ({path.stat().st_size} bytes): {len(sd)} tensors")
    exp_path = OUT / "torch_formats_expected.json"
    exp_path.write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {exp_path} with torch {torch.__version__}")


if __name__ == "__main__":
    main()
