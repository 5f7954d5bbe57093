#!/usr/bin/env python3
"""PyTorch side of headstart's image-training speed benchmark.

Trains a torchvision convolutional base with a new 10-class head on CPU,
float32, NCHW, and reports training images/s for each fine-tuning strategy.
The models are built the way headstart builds them:

  mobilenet_v2  torchvision `mobilenet_v2(num_classes=10)`: `features` (19
                children), global average pool, `classifier` = Dropout(0.2) +
                Linear(1280, 10)
  vgg16         torchvision `vgg16().features` (31 children: 13 conv, 13 ReLU,
                5 max-pool), global average pool, Linear(512, 10)
  resnet18, resnet50
                torchvision's stem (conv1, bn1, relu, maxpool) and layer1-4 as
                8 children, global average pool, Linear(512 or 2048, 10)
  inception_v3  torchvision `inception_v3(aux_logits=False,
                init_weights=True)`: Conv2d_1a_3x3 ... Mixed_7c with its two
                max pools (18 children), global average pool, Linear(2048, 10)

The weights are torchvision's random initialisation (seed 0): the speed of a
step does not depend on their values.

Strategies:
  full      everything trains (all in training mode)
  freeze:N  the first N children of `features` are frozen: requires_grad False,
            in eval mode (BatchNorm uses its running statistics) and run under
            torch.no_grad(); the rest of `features` and the head train
  head      only the head trains; all of `features` is frozen as above

Each strategy starts from a freshly built model and a fresh AdamW (lr 1e-4,
weight_decay 0.01) over the trainable parameters only, runs 2 warm-up steps,
then times --steps steps of forward + cross-entropy + backward +
optimizer.step + zero_grad on one fixed batch: seeded standard-normal images
of --size x --size and random labels.

Model FLOPs per training step (convolutions and linear layers only, 2 FLOPs
per multiply-add, biases, BatchNorm, activations and pooling ignored; the Rust
side uses the same rule to report model FLOPs utilisation):
  conv forward     2 * b * Cout * Hout * Wout * (Cin / groups) * kh * kw
  linear forward   2 * b * in * out
  backward         weight grads: 1x the layer's forward if it trains;
                   input grads: 1x its forward if any layer before it trains
                   (so the first trainable layer of the network has none, and
                   a frozen prefix costs nothing in the backward pass)
  flops_per_step   forward + backward, summed over the layers

Prints one JSON line per (model, strategy); --out FILE also writes them as a
JSON array. Versions used: pip install -r scripts/requirements-vision.txt

End-to-end mode (--folder): `head` for --epochs on a real image folder, the
plain loop's whole wall time (see end_to_end), one JSON line per model.

Usage: python scripts/bench_vision_pytorch.py [--models mobilenet_v2,vgg16]
           [--strategies full,freeze:10,head] [--steps 10] [--threads 2]
           [--batch 16] [--size 224] [--out FILE]
       python scripts/bench_vision_pytorch.py --models M --folder TRAIN_DIR
           --val-folder VAL_DIR [--epochs 10] [--size 224] [--batch 16]
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torchvision
from torch import nn

from procmem import peak_rss_mib, reset_peak_rss

SEED = 0
WARMUP_STEPS = 2
NUM_CLASSES = 10
MODELS = ("mobilenet_v2", "vgg16", "resnet18", "resnet50", "inception_v3")


class Classifier(nn.Module):
    """features -> global average pool -> head, with a frozen prefix of features."""

    def __init__(self, features: nn.Sequential, head: nn.Module, frozen: int):
        super().__init__()
        self.features = features
        self.head = head
        self.frozen = frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen > 0:
            with torch.no_grad():
                x = self.features[: self.frozen](x)
        x = self.features[self.frozen :](x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.head(x)

    def train(self, mode: bool = True):
        super().train(mode)
        for child in self.features[: self.frozen]:
            child.eval()  # frozen children always use their running statistics
        return self


def build(name: str) -> tuple[nn.Sequential, nn.Module]:
    torch.manual_seed(SEED)
    if name == "mobilenet_v2":
        m = torchvision.models.mobilenet_v2(num_classes=NUM_CLASSES)
        return m.features, m.classifier
    if name == "vgg16":
        features = torchvision.models.vgg16().features
        return features, nn.Linear(512, NUM_CLASSES)
    if name in ("resnet18", "resnet50"):
        m = getattr(torchvision.models, name)()
        stem = [m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4]
        return nn.Sequential(*stem), nn.Linear(m.fc.in_features, NUM_CLASSES)
    if name == "inception_v3":
        m = torchvision.models.inception_v3(aux_logits=False, init_weights=True)
        names = [
            "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
            "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
            "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
        ]
        return nn.Sequential(*(getattr(m, n) for n in names)), nn.Linear(2048, NUM_CLASSES)
    raise SystemExit(f"unknown model {name!r} ({', '.join(MODELS)})")


def frozen_children(strategy: str, num_children: int) -> int:
    """How many children of `features` the strategy freezes."""
    if strategy == "full":
        return 0
    if strategy == "head":
        return num_children
    if strategy.startswith("freeze:"):
        try:
            n = int(strategy.split(":", 1)[1])
        except ValueError:
            n = -1
        if 0 <= n <= num_children:
            return n
        raise SystemExit(f"{strategy!r}: N must be in 0..={num_children} for this model")
    raise SystemExit(f"unknown strategy {strategy!r} (full, freeze:N, head)")


def load_model(name: str, strategy: str) -> Classifier:
    features, head = build(name)
    frozen = frozen_children(strategy, len(features))
    features[:frozen].requires_grad_(False)
    model = Classifier(features, head, frozen)
    model.train()
    return model


def flops_per_step(model: Classifier, batch: int, size: int) -> int:
    """Analytic conv + linear FLOPs of one training step (see the module docstring)."""
    layers = []  # (forward FLOPs for the whole batch, trains?) in execution order

    def hook(module, _inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_out = (module.in_channels // module.groups) * kh * kw
            fwd = 2 * output.numel() * per_out * batch
        else:
            fwd = 2 * module.in_features * module.out_features * batch
        layers.append((fwd, module.weight.requires_grad))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    for h in handles:
        h.remove()

    total, before_trains = 0, False
    for fwd, trains in layers:
        total += fwd + (fwd if trains else 0) + (fwd if before_trains else 0)
        before_trains = before_trains or trains
    return total


def make_batch(batch: int, size: int):
    g = torch.Generator().manual_seed(SEED)
    images = torch.randn(batch, 3, size, size, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g)
    return images, labels


def bench(args, name: str, strategy: str) -> dict:
    model = load_model(name, strategy)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    images, labels = make_batch(args.batch, args.size)
    flops = flops_per_step(model, args.batch, args.size)

    def step():
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(WARMUP_STEPS):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps

    return {
        "framework": "pytorch",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "model": name,
        "strategy": strategy,
        "frozen_children": model.frozen,
        "trainable_params": sum(p.numel() for p in params),
        "batch": args.batch,
        "size": args.size,
        "threads": args.threads,
        "steps": args.steps,
        "seconds_per_step": seconds,
        "samples_per_s": args.batch / seconds,
        "flops_per_step": flops,
    }


def end_to_end(args, name: str) -> dict:
    """`head` trained for --epochs on an image folder the way a plain PyTorch
    loop does it: every epoch decodes, resizes and crops the images
    (torchvision transforms, DataLoader in the main process), runs the
    frozen features under no_grad and trains the head; validation on
    --val-folder after every epoch. Timed from the model's construction to
    the last validation."""
    from torchvision import datasets, transforms

    start = time.perf_counter()
    model = load_model(name, "head")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    if name == "vgg16":  # Keras' Caffe-mode input, as the packaged conv base takes it
        norm = transforms.Compose([
            transforms.Lambda(lambda x: x[[2, 1, 0]] * 255.0),
            transforms.Normalize([103.939, 116.779, 123.68], [1.0, 1.0, 1.0]),
        ])
    else:
        norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    tf = transforms.Compose([
        transforms.Resize(round(args.size * 256 / 224)),
        transforms.CenterCrop(args.size),
        transforms.Lambda(lambda im: im.convert("RGB")),
        transforms.ToTensor(),
        norm,
    ])
    train = datasets.ImageFolder(str(args.folder), transform=tf)
    val = datasets.ImageFolder(str(args.val_folder), transform=tf)
    g = torch.Generator().manual_seed(SEED)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch, shuffle=True, generator=g)
    val_loader = torch.utils.data.DataLoader(val, batch_size=args.batch)
    epoch_seconds = []
    accuracy = 0.0
    for _ in range(args.epochs):
        t = time.perf_counter()
        model.train()
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
        model.eval()
        right = 0
        with torch.no_grad():
            for x, y in val_loader:
                right += int((model(x).argmax(1) == y).sum())
        accuracy = right / len(val)
        epoch_seconds.append(time.perf_counter() - t)
    return {
        "framework": "pytorch",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "model": name,
        "strategy": "head",
        "mode": "end-to-end",
        "train_images": len(train),
        "val_images": len(val),
        "epochs": args.epochs,
        "size": args.size,
        "threads": args.threads,
        "epoch_seconds": epoch_seconds,
        "seconds": time.perf_counter() - start,
        "val_accuracy": accuracy,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--strategies", default="full,freeze:10,head")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--out", type=Path, help="also write the results as a JSON array")
    ap.add_argument("--folder", type=Path,
                    help="end-to-end mode: train `head` on this image folder (one sub-folder per class)")
    ap.add_argument("--val-folder", type=Path, help="end-to-end mode: validation image folder")
    ap.add_argument("--epochs", type=int, default=10, help="end-to-end mode: epochs")
    args = ap.parse_args()
    if args.steps < 1 or args.batch < 1 or args.size < 32:
        ap.error("--steps and --batch must be >= 1, --size >= 32")

    torch.set_num_threads(args.threads)

    if args.folder:
        if not args.val_folder:
            ap.error("--folder needs --val-folder")
        for name in args.models.split(","):
            print(json.dumps(end_to_end(args, name.strip())), flush=True)
        return

    results = []
    for name in args.models.split(","):
        for strategy in args.strategies.split(","):
            reset = reset_peak_rss()
            result = bench(args, name.strip(), strategy.strip())
            result["peak_rss_mib"] = peak_rss_mib(reset)
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
