#!/usr/bin/env python3
"""Reference outputs from transformers for headstart's Llama parity tests.

Versions: scripts/requirements-llama.txt (torch 2.15.0, transformers 5.24.0,
safetensors 0.8.0, numpy 2.4.6; Python 3.11, CPU):

    python3 -m venv /tmp/venv-llama
    /tmp/venv-llama/bin/pip install -r scripts/requirements-llama.txt
    /tmp/venv-llama/bin/python scripts/make_llama_fixtures.py

Writes two Hugging Face model directories of seeded random weights
(config.json + model.safetensors, float32), each a `LlamaForCausalLM`:

  tests/fixtures/llama/tied_gqa/       SmolLM2-135M's shape in miniature:
      hidden 48, 2 layers, 4 heads / 2 key-value heads, feed-forward 128,
      vocabulary 100, rms_norm_eps 1e-5, rope_theta 100000, tied output
      projection (the file has no lm_head.weight); config.json as
      transformers 5 writes it (`rope_parameters`).
  tests/fixtures/llama/llama3_untied/  hidden 32, 3 layers, 4 heads / 1
      key-value head, head_dim 16 (not hidden / heads), feed-forward 64,
      vocabulary 96, attention_bias and mlp_bias, its own lm_head, `llama3`
      rope scaling (factor 4, low 1, high 4, original_max_position_embeddings
      16, rope_theta 10000: the frequencies fall in all three bands) and
      max_position_embeddings 64; config.json rewritten in the transformers 4
      spelling (`rope_theta` + `rope_scaling`), which transformers 5 still
      reads. Its inputs reach position 19, beyond the original 16.

and tests/fixtures/llama/reference.json:
  * per fixture: the input ids (batch 2, right-padded: row 1 is shorter),
    the attention mask and the eval-mode logits `[2, seq, vocab]` from the
    eager attention (rows' padded positions are there too; only real ones
    are compared);
  * the inverse rotary frequencies transformers computes for a few
    `rope_parameters` (default, linear, llama3 with Llama 3.1's values);
  * SmolLM2-135M's parameter count, counted on an empty (meta-device)
    `LlamaForCausalLM` of its configuration with tied embeddings.

Weights are drawn larger than the published init (std 0.02) so that every
part moves the logits: matrices std 0.15, biases 0.1, norm weights 1 +/- 0.2.
"""

import json
import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "llama")

FIXTURES = {
    "tied_gqa": dict(
        config=dict(
            vocab_size=100,
            hidden_size=48,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-5,
            max_position_embeddings=128,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,
        ),
        lengths=(12, 7),
        legacy_spelling=False,
    ),
    "llama3_untied": dict(
        config=dict(
            vocab_size=96,
            hidden_size=32,
            head_dim=16,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=1,
            rms_norm_eps=1e-6,
            max_position_embeddings=64,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
            attention_bias=True,
            mlp_bias=True,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=[2, 5],
        ),
        lengths=(20, 13),
        legacy_spelling=True,
    ),
}

ROPES = {
    "default_theta100000_dim12": (dict(rope_type="default", rope_theta=100000.0), 48, 4),
    "linear2_theta10000_dim16": (dict(rope_type="linear", rope_theta=10000.0, factor=2.0), 64, 4),
    "llama3_fixture_dim16": (FIXTURES["llama3_untied"]["config"]["rope_parameters"], 64, 4),
    "llama3_1_dim128": (
        dict(
            rope_type="llama3",
            rope_theta=500000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=8192,
        ),
        4096,
        32,
    ),
}

SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
    tie_word_embeddings=True,
)


def randomise(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))


def to_legacy(path):
    """config.json in the transformers 4 spelling: rope_theta + rope_scaling."""
    with open(path) as f:
        c = json.load(f)
    rope = c.pop("rope_parameters")
    c["rope_theta"] = rope.pop("rope_theta")
    c["rope_scaling"] = rope
    with open(path, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    torch.manual_seed(0)
    reference = {"fixtures": {}, "inv_freq": {}}
    for name, spec in FIXTURES.items():
        out = os.path.join(ROOT, name)
        config = LlamaConfig(**spec["config"])
        model = LlamaForCausalLM(config).eval()
        randomise(model)
        model.save_pretrained(out)
        if spec["legacy_spelling"]:
            to_legacy(os.path.join(out, "config.json"))
        again, info = LlamaForCausalLM.from_pretrained(
            out, output_loading_info=True, attn_implementation="eager"
        )
        again.eval()
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        assert again.config.rope_parameters == config.rope_parameters, again.config.rope_parameters
        keys = sorted(__import__("safetensors").safe_open(os.path.join(out, "model.safetensors"), "pt").keys())
        assert ("lm_head.weight" in keys) != config.tie_word_embeddings, keys

        seq, short = spec["lengths"]
        ids = torch.randint(0, config.vocab_size, (2, seq))
        mask = torch.ones(2, seq, dtype=torch.long)
        mask[1, short:] = 0
        ids[1, short:] = 0
        with torch.no_grad():
            logits = again(input_ids=ids, attention_mask=mask).logits
            assert torch.allclose(logits, model(input_ids=ids, attention_mask=mask).logits, atol=1e-5)
        reference["fixtures"][name] = {
            "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "logits": logits.tolist(),
            "num_params": sum(p.numel() for p in again.parameters()),
        }
        print(name, "keys", len(keys), "logits scale", float(logits.abs().max()))

    for name, (rope, hidden, heads) in ROPES.items():
        config = LlamaConfig(
            hidden_size=hidden, num_attention_heads=heads, max_position_embeddings=131072, rope_parameters=dict(rope)
        )
        rotary = LlamaRotaryEmbedding(config)
        reference["inv_freq"][name] = {
            "rope_parameters": rope,
            "head_dim": hidden // heads,
            "inv_freq": rotary.inv_freq.tolist(),
        }

    with torch.device("meta"):
        smol = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    reference["smollm2_135m_params"] = sum(p.numel() for p in smol.parameters())
    print("SmolLM2-135M parameters:", reference["smollm2_135m_params"])
    reference["versions"] = {
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }
    with open(os.path.join(ROOT, "reference.json"), "w") as f:
        json.dump(reference, f)
        f.write("\n")


if __name__ == "__main__":
    main()
