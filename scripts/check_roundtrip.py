#!/usr/bin/env python3
"""Round trip of a headstart-trained classifier through `transformers`.

Check mode (the default) trains a model with the headstart binary, loads the
exported `RUN_DIR/model/` with `transformers.AutoModelForSequenceClassification`
and `AutoTokenizer`, and compares against `headstart predict` on the same texts:

  * transformers loads the exported weights with no missing or unexpected keys;
  * AutoTokenizer gives the same ids as the tokenizer headstart uses
    (tokenizer.json if present, else a BertTokenizer from vocab.txt), truncated
    to the run's max_length;
  * max abs logit difference <= --tol (1e-4) and the same predicted labels;
  * config.json's id2label / label2id equal the run's label order.

With no --model it trains the tiny fixture tests/fixtures/tiny-bert on a
generated two-label CSV (40 texts, `--strategy full --epochs 8 --lr 1e-2
--max-length 32`: with `--epochs 2` and the default learning rate the tiny
model learns nothing and its logits stay ~5e-3).
To check a real run instead:

    python scripts/check_roundtrip.py --model ~/.cache/headstart/models/all-MiniLM-L6-v2 \\
        --train data/train.csv --text-column text --label-column label \\
        --train-limit 64 --epochs 1 --max-length 64

or skip training and check an existing run (or exported model) directory:

    python scripts/check_roundtrip.py --run runs/my-run

--write-fixture writes tests/fixtures/tiny-bert-cls/ for tests/roundtrip.rs
instead: a tiny randomly initialised BertForSequenceClassification saved by
transformers (save_pretrained, safetensors; labels negative/neutral/positive),
the tiny vocab.txt and tokenizer_config.json of tests/fixtures/tiny-bert, and
reference.safetensors (input_ids, attention_mask, token_type_ids, logits of
4 texts at max_length 16) with reference.json (texts, max_length, labels).

Prints the max abs logit difference; exits 1 when a check fails. CI never runs
this script. Versions used:
    pip install torch==2.15.0 transformers==5.24.0 safetensors==0.8.0 tokenizers==0.23.3
"""

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TINY_BASE = FIXTURES / "tiny-bert"
TINY_CLS = FIXTURES / "tiny-bert-cls"

# ----------------------------------------------------------------------------
# --write-fixture


CLS_LABELS = ["negative", "neutral", "positive"]
CLS_TEXTS = [
    "The lungs are clear.",
    # Longer than 16 word pieces: exercises truncation.
    "No focal consolidation, pleural effusion or pneumothorax; heart size is normal.",
    "Mild bibasilar atelectasis!",
    "ok",
]
CLS_MAX_LENGTH = 16


def tiny_cls_config(vocab_size: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        hidden_act="gelu",
        # Larger than transformers' 0.02, so the logits depend clearly on the
        # text (with 0.02 the [CLS] states of a 2-layer model barely differ).
        initializer_range=0.2,
        num_labels=len(CLS_LABELS),
        id2label=dict(enumerate(CLS_LABELS)),
        label2id={label: i for i, label in enumerate(CLS_LABELS)},
        problem_type="single_label_classification",
    )


def write_fixture() -> None:
    from safetensors.torch import save_file
    from transformers import BertForSequenceClassification, BertTokenizer

    torch.manual_seed(20261129)
    out = TINY_CLS
    out.mkdir(parents=True, exist_ok=True)
    for f in ["vocab.txt", "tokenizer_config.json"]:
        shutil.copyfile(TINY_BASE / f, out / f)
    vocab_size = len((out / "vocab.txt").read_text().splitlines())
    model = BertForSequenceClassification(tiny_cls_config(vocab_size)).eval()
    # transformers initialises biases to 0 and LayerNorm to (1, 0): perturb
    # them, so a dropped, swapped or transposed parameter cannot pass.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(out, safe_serialization=True)

    do_lower = json.loads((out / "tokenizer_config.json").read_text()).get("do_lower_case", True)
    tok = BertTokenizer(str(out / "vocab.txt"), do_lower_case=do_lower)
    enc = tok(
        CLS_TEXTS,
        padding=True,
        truncation=True,
        max_length=CLS_MAX_LENGTH,
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = model(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            token_type_ids=enc["token_type_ids"],
        ).logits
    save_file(
        {
            "input_ids": enc["input_ids"].contiguous(),
            "attention_mask": enc["attention_mask"].contiguous(),
            "token_type_ids": enc["token_type_ids"].contiguous(),
            "logits": logits.contiguous(),
        },
        str(out / "reference.safetensors"),
    )
    (out / "reference.json").write_text(
        json.dumps(
            {
                "texts": CLS_TEXTS,
                "max_length": CLS_MAX_LENGTH,
                "labels": CLS_LABELS,
                "predicted": [CLS_LABELS[i] for i in logits.argmax(-1).tolist()],
                "versions": {
                    "torch": torch.__version__,
                    "transformers": __import__("transformers").__version__,
                },
            },
            indent=2,
        )
        + "\n"
    )
    for p in out.iterdir():
        p.chmod(0o644)  # safetensors writes 0600 files
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out.relative_to(ROOT)}/ ({size / 1024:.0f} KiB)")
    print("logits:", [[round(v, 4) for v in row] for row in logits.tolist()])


# ----------------------------------------------------------------------------
# check mode


def tiny_dataset() -> list[tuple[str, str]]:
    """40 short texts in two classes, words from the tiny fixture's vocabulary."""
    normal_a = ["The lungs are clear", "Heart size is normal", "No pleural effusion",
                "No pneumothorax", "No focal consolidation"]
    normal_b = [".", "; no pneumothorax.", ", stable.", "; heart size is normal."]
    abnormal_a = ["Right pleural effusion", "Left base atelectasis", "Mild consolidation",
                  "Right base consolidation", "Left pleural effusion"]
    abnormal_b = [".", " with atelectasis.", ", stable.", " in the right base."]
    rows = []
    for i in range(20):
        rows.append((normal_a[i % 5] + normal_b[(i // 5) % 4], "normal"))
        rows.append((abnormal_a[i % 5] + abnormal_b[(i // 5) % 4], "abnormal"))
    return rows


# With `--epochs 2` and the strategy's learning rate (5e-5) the tiny random
# model learns nothing (6 steps): every text gets the same label and logits of
# ~5e-3, too small for a 1e-4 tolerance to mean much. These settings reach
# validation accuracy 1.0, so labels differ between texts.
TINY_EPOCHS = 8
TINY_LR = 1e-2

TINY_CHECK_TEXTS = [
    "The lungs are clear.",
    "Right pleural effusion with atelectasis.",
    "No focal consolidation, pleural effusion or pneumothorax; heart size is normal.",
    "ok",
    "Mild bibasilar atelectasis in the left base!",
    "-- a text that starts with dashes",
]


def read_texts(path: Path, column: str, n: int) -> list[str]:
    """The first n non-empty texts of a .csv / .tsv / .jsonl file."""
    out = []
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    t = json.loads(line).get(column)
                    if isinstance(t, str) and t.strip():
                        out.append(t)
                if len(out) >= n:
                    break
        return out
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter=delimiter):
            if column not in row:
                sys.exit(f"{path} has no column {column!r}")
            t = row[column]
            if t and t.strip():
                out.append(t)
            if len(out) >= n:
                break
    return out


def headstart_ids(model_dir: Path, texts: list[str], max_length: int) -> list[list[int]]:
    """The ids headstart's tokenizer gives (see src/tokenize.rs): tokenizer.json
    with right/longest-first truncation, else WordPiece from vocab.txt."""
    if (model_dir / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tok.no_padding()
        tok.enable_truncation(max_length, strategy="longest_first", direction="right")
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=True)]
    from transformers import BertTokenizer

    cfg_path = model_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    tok = BertTokenizer(str(model_dir / "vocab.txt"), do_lower_case=cfg.get("do_lower_case", True))
    return tok(texts, truncation=True, max_length=max_length)["input_ids"]


def run(cmd: list[str]) -> str:
    print("$", " ".join(str(c) if " " not in str(c) else repr(str(c)) for c in cmd), flush=True)
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        sys.exit(f"command failed with exit status {p.returncode}")
    return p.stdout


def check(args, work: Path) -> bool:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    headstart = args.headstart if args.headstart.is_absolute() else ROOT / args.headstart
    if not headstart.is_file():
        sys.exit(f"no headstart binary at {headstart}: run `cargo build` or pass --headstart")

    # 1-2. data and training
    if args.run is not None:
        run_dir = args.run
        texts = TINY_CHECK_TEXTS if args.train is None else read_texts(
            args.train, args.text_column, args.n_texts)
    else:
        if args.train is None:
            train_csv = work / "train.csv"
            with train_csv.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["text", "label"])
                w.writerows(tiny_dataset())
            model = TINY_BASE
            texts = TINY_CHECK_TEXTS
        else:
            train_csv = args.train
            model = args.model
            texts = read_texts(train_csv, args.text_column, args.n_texts)
        run_dir = work / "run"
        cmd = [headstart, "train", "--model", model, "--train", train_csv,
               "--text-column", args.text_column, "--label-column", args.label_column,
               "--strategy", args.strategy, "--max-length", args.max_length,
               "--out", run_dir, "--quiet"]
        epochs = args.epochs if args.epochs is not None else (
            TINY_EPOCHS if args.train is None else None)
        if epochs is not None:
            cmd += ["--epochs", epochs]
        if args.train_limit is not None:
            cmd += ["--train-limit", args.train_limit]
        if args.max_steps is not None:
            cmd += ["--max-steps", args.max_steps]
        lr = args.lr if args.lr is not None else (TINY_LR if args.train is None else None)
        if lr is not None:
            cmd += ["--lr", lr]
        run(cmd)
    model_dir = run_dir / "model" if (run_dir / "model" / "config.json").is_file() else run_dir
    if not texts:
        sys.exit("no texts to compare")

    ok = True

    def fail(msg: str) -> None:
        nonlocal ok
        ok = False
        print("FAIL:", msg)

    meta_path = model_dir / "headstart.json"
    max_length = json.loads(meta_path.read_text())["max_length"] if meta_path.is_file() else 128

    # Labels: the run's order (config.json of the run) against the export's id2label.
    hf_config = json.loads((model_dir / "config.json").read_text())
    run_config_path = model_dir.parent / "config.json"
    run_labels = None
    if run_config_path.is_file() and run_config_path != model_dir / "config.json":
        run_labels = json.loads(run_config_path.read_text()).get("labels", {}).get("labels")
    id2label = {int(k): v for k, v in hf_config["id2label"].items()}
    labels = [id2label[i] for i in range(len(id2label))]
    if sorted(id2label) != list(range(len(id2label))):
        fail(f"id2label keys are not 0..n-1: {sorted(id2label)}")
    if hf_config.get("label2id") != {label: i for i, label in enumerate(labels)}:
        fail(f"label2id {hf_config.get('label2id')} does not invert id2label {id2label}")
    if run_labels is not None and run_labels != labels:
        fail(f"id2label order {labels} differs from the run's labels {run_labels}")
    if hf_config.get("architectures") != ["BertForSequenceClassification"]:
        fail(f"architectures is {hf_config.get('architectures')}")

    # 3. transformers
    model, info = AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager", output_loading_info=True)
    model.eval()
    for kind in ["missing_keys", "unexpected_keys", "mismatched_keys"]:
        if info.get(kind):
            fail(f"transformers reports {kind}: {sorted(info[kind])}")
    if model.config.id2label != id2label:
        fail(f"transformers' id2label {model.config.id2label} != config.json's {id2label}")
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    auto_ids = [row[: int(m.sum())].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    hs_ids = headstart_ids(model_dir, texts, max_length)
    for t, a, h in zip(texts, auto_ids, hs_ids):
        if a != h:
            fail(f"token ids differ for {t!r}:\n  AutoTokenizer {a}\n  headstart     {h}")
    with torch.no_grad():
        hf_logits = model(**enc).logits.tolist()

    # 4. headstart predict
    out = run([headstart, "predict", "--model", model_dir, "--", *texts])
    preds = [json.loads(line) for line in out.splitlines() if line.strip()]
    if len(preds) != len(texts):
        fail(f"headstart predict gave {len(preds)} lines for {len(texts)} texts")
        return False
    max_diff = 0.0
    scale = max(abs(v) for row in hf_logits for v in row)
    for t, p, hf in zip(texts, preds, hf_logits):
        if p["text"] != t:
            fail(f"predict echoed {p['text']!r} for {t!r}")
        diff = max(abs(a - b) for a, b in zip(p["logits"], hf))
        max_diff = max(max_diff, diff)
        hf_label = id2label[max(range(len(hf)), key=lambda i: hf[i])]
        if p["label"] != hf_label:
            fail(f"{t!r}: headstart says {p['label']}, transformers {hf_label}")
        if set(p["probabilities"]) != set(labels):
            fail(f"{t!r}: probabilities over {sorted(p['probabilities'])}, labels are {labels}")
        if len(p["logits"]) != len(labels):
            fail(f"{t!r}: {len(p['logits'])} logits for {len(labels)} labels")
        if args.verbose:
            print(f"  {t[:50]!r:54} {p['label']:>10}  diff {diff:.2e}")
    print(f"labels {labels}, {len(texts)} texts, max_length {max_length}")
    print(f"max abs logit diff: {max_diff:.3e} (tolerance {args.tol:g}; "
          f"largest |logit| {scale:.3g})")
    if max_diff > args.tol:
        fail(f"max abs logit diff {max_diff:.3e} > {args.tol:g}")
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write-fixture", action="store_true",
                    help="write tests/fixtures/tiny-bert-cls/ and exit")
    ap.add_argument("--headstart", type=Path, default=Path("target/debug/headstart"),
                    help="headstart binary (relative to the repository root)")
    ap.add_argument("--model", type=Path, help="base model to train (with --train)")
    ap.add_argument("--train", type=Path, help="training data (.csv/.tsv/.jsonl) for a real run")
    ap.add_argument("--run", type=Path, help="check this existing run or exported model directory")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--label-column", default="label")
    ap.add_argument("--strategy", default="full")
    ap.add_argument("--epochs", type=int,
                    help=f"default: {TINY_EPOCHS} for the tiny run, headstart's for --train")
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--train-limit", type=int)
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--lr", type=float,
                    help=f"peak learning rate (default: {TINY_LR:g} for the tiny run, "
                         "headstart's for --train)")
    ap.add_argument("--n-texts", type=int, default=8,
                    help="texts of --train to compare (real runs)")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--work", type=Path, help="work directory (kept); default a temporary one")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)

    if args.write_fixture:
        write_fixture()
        return
    if args.train is not None and args.model is None and args.run is None:
        ap.error("--train needs --model (the base model to tune)")
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        if (args.work / "run").exists() and args.run is None:
            ap.error(f"{args.work / 'run'} exists: remove it or pass another --work")
        ok = check(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="headstart-roundtrip-") as tmp:
            ok = check(args, Path(tmp))
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
